"""Kafka sink: produce every journaled event to a Kafka topic (optional, needs confluent-kafka).

:class:`KafkaEventSink` produces each event's JSON line with key = stream id (so one stream's
events stay in order in one partition) and header ``seq``, through an idempotent producer
(``enable.idempotence=true``, ``acks=all``: no duplicates or reordering from retries).
Delivery reports are counted; :meth:`KafkaEventSink.close` flushes with a timeout.

With a journal (:meth:`KafkaEventSink.resume_from`) the sink keeps the highest ``seq`` below
which every event was acknowledged by Kafka in the journal's ``meta`` table, and on start
produces again the journaled events after it: an event journaled before a crash reaches
Kafka after the restart (at least once; consumers de-duplicate by the ``seq`` header).

Install with ``pip install 'vigil[kafka]'``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

_DEFAULTS = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}


class KafkaUnavailable(ImportError):
    """confluent-kafka is not installed."""


def _producer_class() -> Any:
    try:
        from confluent_kafka import Producer
    except ImportError as exc:
        raise KafkaUnavailable(
            "the Kafka sink needs confluent-kafka: pip install 'vigil[kafka]' "
            "(or pip install confluent-kafka)"
        ) from exc
    return Producer


class KafkaEventSink:
    """Produce events to ``topic``; see the module docstring.

    Args:
        topic: Kafka topic.
        config: librdkafka producer settings (at least ``bootstrap.servers``); idempotence and
            ``acks=all`` are on unless overridden.
        flush_timeout_s: how long :meth:`close` waits for outstanding deliveries.
        checkpoint_every_s: how often the delivered ``seq`` is written to the journal.
    """

    def __init__(
        self,
        topic: str,
        config: dict[str, Any],
        *,
        flush_timeout_s: float = 10.0,
        checkpoint_every_s: float = 1.0,
    ) -> None:
        producer_cls = _producer_class()
        self.topic = topic
        self._producer = producer_cls({**_DEFAULTS, **config})
        self._flush_timeout_s = flush_timeout_s
        self._checkpoint_every_s = checkpoint_every_s
        self.produced = 0
        self.delivered = 0
        self.failed = 0
        self.delivered_seq = 0  # every seq <= this is acknowledged
        self._acked: set[int] = set()
        self._journal: Any = None
        self._next_checkpoint = time.monotonic() + checkpoint_every_s

    @property
    def producer(self) -> Any:
        """The underlying ``confluent_kafka.Producer``."""
        return self._producer

    def resume_from(self, journal: Any) -> int:
        """Track delivery in ``journal`` and produce the journaled events Kafka lacks.

        Returns how many events were produced again.
        """
        self._journal = journal
        key = self._meta_key()
        done = max(int(journal.get_meta(key) or 0), journal.first - 1)  # retention's gap
        self.delivered_seq = done
        again = 0
        for line in journal.read_after(done):
            self.produce(json.loads(line), line)
            again += 1
        if again:
            log.info("kafka: producing %d journaled events after seq %d again", again, done)
        return again

    def produce(self, event: dict[str, Any], line: str) -> None:
        """Queue one event (never blocks for long: waits at most 5 s for queue room)."""
        seq = event.get("seq")
        key = str(event.get("stream") or "").encode()
        headers = [("seq", str(seq).encode())]
        deadline = time.monotonic() + 5.0
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=line.encode(),
                    key=key,
                    headers=headers,
                    on_delivery=lambda err, msg, seq=seq: self._on_delivery(err, seq),
                )
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                if time.monotonic() >= deadline:
                    self.failed += 1
                    log.error("kafka: local queue full for 5 s; event seq %s not produced", seq)
                    return
                self._producer.poll(0.05)
        self.produced += 1
        self._producer.poll(0)
        if self._journal is not None and time.monotonic() >= self._next_checkpoint:
            self._checkpoint()

    def close(self) -> int:
        """Flush (at most ``flush_timeout_s``); returns the number of undelivered events."""
        left = self._producer.flush(self._flush_timeout_s)
        if left:
            log.warning("kafka: %d events not delivered within %.1f s", left, self._flush_timeout_s)
        if self._journal is not None:
            self._checkpoint()
            self._journal = None
        return left

    def _on_delivery(self, err: Any, seq: int | None) -> None:
        if err is not None:
            self.failed += 1
            log.error("kafka: delivery of seq %s failed: %s", seq, err)
            return
        self.delivered += 1
        if seq is None:
            return
        self._acked.add(seq)
        while self.delivered_seq + 1 in self._acked:
            self.delivered_seq += 1
            self._acked.discard(self.delivered_seq)

    def _checkpoint(self) -> None:
        self._next_checkpoint = time.monotonic() + self._checkpoint_every_s
        if self._journal is not None and not self._journal.readonly:
            self._journal.set_meta(self._meta_key(), str(self.delivered_seq))

    def _meta_key(self) -> str:
        return f"kafka.{self.topic}.delivered_seq"
