"""Kafka sink against librdkafka's built-in mock cluster (no broker needed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from stream.journal import EventJournal
from stream.sinks import EventPublisher
from tests.support.feed import event

ck = pytest.importorskip("confluent_kafka")

from stream.kafka_sink import KafkaEventSink  # noqa: E402


def consume(bootstrap: str, topic: str, n: int, timeout_s: float = 20.0) -> list:
    consumer = ck.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "t", "enable.auto.commit": False}
    )
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in parts])
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                got.append(msg)
    finally:
        consumer.close()
    return got


def mock_sink(topic: str = "vigil.events") -> tuple[KafkaEventSink, str]:
    sink = KafkaEventSink(topic, {"test.mock.num.brokers": 1}, flush_timeout_s=10)
    brokers = sink.producer.list_topics(timeout=10).brokers.values()
    return sink, ",".join(f"{b.host}:{b.port}" for b in brokers)


def test_every_journaled_event_reaches_kafka_keyed_by_stream(tmp_path: Path) -> None:
    sink, bootstrap = mock_sink()
    pub = EventPublisher(journal=EventJournal(tmp_path / "j.sqlite"), kafka=sink)
    for i in range(20):
        pub.publish(event(stream=f"cam{i % 2}", count=i, total=i))
    pub.close()  # flushes
    assert sink.delivered == 20 and sink.failed == 0 and sink.delivered_seq == 20
    msgs = consume(bootstrap, "vigil.events", 20)
    seqs: dict[bytes, list[int]] = {}
    for m in msgs:
        seqs.setdefault(m.key(), []).append(json.loads(m.value())["seq"])
    assert seqs == {b"cam0": list(range(1, 21, 2)), b"cam1": list(range(2, 21, 2))}  # ordered
    assert all(dict(m.headers())["seq"] == str(json.loads(m.value())["seq"]).encode() for m in msgs)
    with EventJournal(tmp_path / "j.sqlite") as j:
        assert j.get_meta("kafka.vigil.events.delivered_seq") == "20"


def test_events_journaled_but_not_delivered_are_produced_after_restart(tmp_path: Path) -> None:
    """Fault: the process died after journaling events Kafka never acknowledged."""
    with EventJournal(tmp_path / "j.sqlite") as j:
        for i in range(5):
            j.append(event(count=i, total=i))
        j.set_meta("kafka.vigil.events.delivered_seq", "2")
    sink, bootstrap = mock_sink()
    pub = EventPublisher(journal=EventJournal(tmp_path / "j.sqlite"), kafka=sink)
    pub.publish(event(count=5, total=5))
    pub.close()
    msgs = consume(bootstrap, "vigil.events", 4)
    assert sorted(json.loads(m.value())["seq"] for m in msgs) == [3, 4, 5, 6]


def test_missing_confluent_kafka_is_a_clear_error(monkeypatch) -> None:
    import builtins

    from stream import kafka_sink

    real = builtins.__import__

    def no_kafka(name, *a, **k):
        if name.startswith("confluent_kafka"):
            raise ImportError("No module named 'confluent_kafka'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_kafka)
    with pytest.raises(kafka_sink.KafkaUnavailable, match="pip install"):
        KafkaEventSink("t", {"bootstrap.servers": "127.0.0.1:1"})
