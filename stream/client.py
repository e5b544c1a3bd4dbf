"""Subscriber SDK: a lossless, resumable, de-duplicated iterator over vigil's event feed.

    from stream.client import EventClient, PublisherDead

    with EventClient("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556",
                     from_seq=last_seq_i_stored, types=["action."]) as client:
        for event in client:          # blocks; raises PublisherDead after missed heartbeats
            handle(event)
            last_seq_i_stored = event["seq"]

Guarantee: with a replay endpoint, every event journaled after ``from_seq`` (and still held by
the journal's retention) is yielded exactly once, in ``seq`` order — across slow-joiner
losses, subscriber queue overflows, and publisher restarts. ``from_seq=None`` starts instead
from the *open state* (latest ``stream.online``/``.offline`` per stream and open tracks), then
live events. Without a replay endpoint the client is live-only: order and de-duplication hold,
losses are logged and counted in :attr:`EventClient.lost`.

How: the client follows the zguide Clone pattern (see :mod:`stream.replay`). It subscribes to
everything plus ``HEARTBEAT`` (filters are applied locally, so that every ``seq`` is seen and
a gap is always noticed), waits for the first live message, then pulls the replay chunk by
chunk up to the publisher's head before it reads live events again; live events it already
has are dropped by ``seq``. A live event with ``seq`` beyond the next expected one, or a
heartbeat whose ``head`` is beyond it, starts another catch-up.

Liveness: the publisher sends a heartbeat every ``heartbeat_s`` (1 s by default). If nothing
arrives for ``heartbeat_timeout_s``, iteration raises :class:`PublisherDead` (and
:attr:`EventClient.alive` is False). The client stays usable: iterate again and it resumes,
with catch-up, once the publisher is back (ZeroMQ reconnects by itself).
"""

from __future__ import annotations

import collections
import itertools
import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import zmq

from stream.replay import HEARTBEAT, MAX_MESSAGE_BYTES
from stream.zsocket import PeerError, parse_json_object

log = logging.getLogger(__name__)


class PublisherDead(Exception):
    """No heartbeat nor event for ``heartbeat_timeout_s``: the publisher is gone or cut off."""


class EventClient:
    """Iterate over vigil events; see the module docstring for the guarantee.

    Args:
        events_endpoint: the publisher's event PUB endpoint.
        replay_endpoint: its replay ROUTER endpoint (None: live only, no resume).
        from_seq: yield events with ``seq`` greater than this (0: everything the journal holds;
            None: the open-state snapshot, then live).
        types: only events whose type starts with one of these prefixes (None: all).
        streams: only events of these stream ids (None: all).
        heartbeat_timeout_s: silence after which :class:`PublisherDead` is raised (None: never).
        request_timeout_s: how long to wait for one replay answer.
        chunk: events asked for per replay request.
        rcvhwm: live messages queued in this process before ZeroMQ pushes back (then the
            publisher drops for this subscriber, and the client catches up from the replay).
        curve_server_key: the publisher's CURVE public key (z85 bytes/str, or a ``zmq.auth``
            certificate file) when its endpoints use CURVE.
        curve_client_cert: this client's ``zmq.auth`` secret certificate file (default: a
            fresh key pair, enough unless the publisher admits only listed clients).
        ctx: ZeroMQ context (default: a private one, terminated on close).
    """

    def __init__(
        self,
        events_endpoint: str,
        replay_endpoint: str | None = None,
        *,
        from_seq: int | None = 0,
        types: Iterable[str] | None = None,
        streams: Iterable[str] | None = None,
        heartbeat_timeout_s: float | None = 5.0,
        request_timeout_s: float = 5.0,
        chunk: int = 1000,
        rcvhwm: int = 100_000,
        curve_server_key: bytes | str | Path | None = None,
        curve_client_cert: str | Path | None = None,
        ctx: zmq.Context | None = None,
    ) -> None:
        self.types = tuple(types) if types else None
        self.streams = frozenset(streams) if streams else None
        self.last = from_seq or 0  # highest seq accounted for (yielded or filtered out)
        self.lost: list[tuple[int, int]] = []  # seq ranges that could not be recovered
        self.duplicates = 0
        self.replayed = 0  # events fetched from the replay endpoint
        self.alive = True
        self.epoch: str | None = None
        self._snapshot_first = from_seq is None
        self._synced = False
        self._target = 0  # catch up (replay) until self.last reaches this
        self._pending: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._hb_timeout = heartbeat_timeout_s
        self._req_timeout = request_timeout_s
        self._chunk = chunk
        self._ids = itertools.count(1)
        self._own_ctx = ctx is None
        self._ctx = ctx or zmq.Context()
        self._curve = _client_keys(curve_server_key, curve_client_cert)
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.RCVHWM, rcvhwm)
        self._secure(self._sub)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.setsockopt(zmq.SUBSCRIBE, HEARTBEAT)  # opts in to heartbeats
        self._sub.connect(events_endpoint)
        self._replay_endpoint = replay_endpoint
        self._dealer: zmq.Socket | None = None
        if replay_endpoint:
            self._dealer = self._ctx.socket(zmq.DEALER)
            self._dealer.setsockopt(zmq.LINGER, 0)
            self._secure(self._dealer)
            self._dealer.connect(replay_endpoint)
        elif from_seq:
            log.warning("from_seq=%s needs a replay endpoint; starting from live", from_seq)
        self._last_heard = time.monotonic()

    # -- public API ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            event = self.recv(timeout_s=None)
            if event is None:  # closed
                return
            yield event

    def recv(self, timeout_s: float | None = None) -> dict[str, Any] | None:
        """The next matching event; None after ``timeout_s`` seconds (None: wait forever),
        or once the client is closed.

        Raises :class:`PublisherDead` when the publisher has been silent for
        ``heartbeat_timeout_s``, or its replay endpoint does not answer.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._sub is not None:
            if self._pending:
                line, forced = self._pending.popleft()
                event = _parse(line, "a replayed event")
                if event is None:
                    continue
                if forced:  # snapshot state: its seqs may be below self.last
                    if self._matches(event):
                        return event
                elif self._accept(event):
                    return event
                continue
            if self._dealer is not None and self.last < self._target:
                self._fetch_chunk()
                continue
            now = time.monotonic()
            wait = 1.0 if deadline is None else max(0.0, deadline - now)
            if self._hb_timeout is not None:
                wait = min(wait, max(0.0, self._last_heard + self._hb_timeout - now))
            if self._sub.poll(int(wait * 1000)):
                event = self._on_live(self._sub.recv_multipart())
                if event is not None:
                    return event
                continue
            now = time.monotonic()
            if self._hb_timeout is not None and now - self._last_heard >= self._hb_timeout:
                self.alive = False
                self._last_heard = now  # raise once per silent period
                raise PublisherDead(
                    f"no heartbeat nor event for {self._hb_timeout:.1f} s (last seq {self.last})"
                )
            if deadline is not None and now >= deadline:
                return None
        return None

    def close(self) -> None:
        """Close the sockets (and the context, when the client made it)."""
        for sock in (self._sub, self._dealer):
            if sock is not None:
                sock.close(0)
        self._sub = self._dealer = None
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self) -> EventClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _secure(self, sock: zmq.Socket) -> None:
        if self._curve is not None:
            server, public, secret = self._curve
            sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = (
                server,
                public,
                secret,
            )

    def _matches(self, event: dict[str, Any]) -> bool:
        if self.types and not str(event.get("type", "")).startswith(self.types):
            return False
        return not (self.streams and event.get("stream") not in self.streams)

    def _accept(self, event: dict[str, Any]) -> bool:
        """Account for an event in ``seq`` order; True if it is new and passes the filters."""
        seq = event["seq"]
        if seq <= self.last:
            self.duplicates += 1
            return False
        if seq > self.last + 1:
            self._lose(self.last + 1, seq - 1)
        self.last = seq
        return self._matches(event)

    def _lose(self, first: int, last: int) -> None:
        self.lost.append((first, last))
        log.warning(
            "events %d..%d are lost (deleted by retention, or no replay endpoint)", first, last
        )

    def _on_live(self, frames: list[bytes]) -> dict[str, Any] | None:
        """Handle one live message; returns the event to yield, if any."""
        self._last_heard = time.monotonic()
        self.alive = True
        if len(frames) != 2:
            log.warning("ignoring a %d-frame message on the event feed", len(frames))
            return None
        topic, payload = frames
        try:
            # Bounded: a hostile server's deeply nested JSON is a PeerError, not a RecursionError.
            body = parse_json_object(payload, max_bytes=MAX_MESSAGE_BYTES)
            head = int(body["head"]) if topic == HEARTBEAT else int(body["seq"])
        except (ValueError, KeyError, TypeError, OverflowError):  # PeerError is a ValueError
            log.warning("ignoring a malformed message on topic %r", topic[:32])
            return None
        if topic == HEARTBEAT:
            epoch = body.get("epoch")
            if self.epoch is not None and epoch != self.epoch:
                log.info("publisher restarted (epoch %s -> %s, head %d)", self.epoch, epoch, head)
                if head < self.last:
                    log.warning("publisher restarted without its journal: seq reset to %d", head)
                    self.last = head
                    self._target = min(self._target, head)
            self.epoch = epoch
        if not self._synced:
            self._sync()
        if topic == HEARTBEAT:
            if head > self.last:
                if self._dealer is not None:
                    self._target = max(self._target, head)  # events were published, not seen
                else:
                    self._lose(self.last + 1, head)
                    self.last = head
            return None
        if head > self.last + 1 and self._dealer is not None:
            # A gap: drop this event and fetch it, with the ones before it, from the journal.
            self._target = max(self._target, head)
            return None
        return body if self._accept(body) else None

    def _sync(self) -> None:
        """On the first live message (the subscription is active): load the snapshot if asked."""
        if self._snapshot_first and self._dealer is not None:
            header, lines = self._request(b"SNAPSHOT", {})
            self._pending.extend((bytes(line), True) for line in lines)
            self.last = max(self.last, int(header["head"]))
        self._synced = True

    def _fetch_chunk(self) -> None:
        """Fetch the next replay chunk after :attr:`last` into the pending queue."""
        header, lines = self._request(b"REPLAY", {"after": self.last, "limit": self._chunk})
        self._pending.extend((bytes(line), False) for line in lines)
        self.replayed += len(lines)
        if not lines and int(header["last"]) <= self.last and self.last < self._target:
            # The journal does not reach the target (it cannot, unless it was replaced).
            self._lose(self.last + 1, self._target)
            self.last = self._target

    def _request(self, command: bytes, body: dict[str, Any]) -> tuple[dict[str, Any], list]:
        assert self._dealer is not None
        rid = next(self._ids)
        self._dealer.send_multipart([command, json.dumps({**body, "id": rid}).encode()])
        deadline = time.monotonic() + self._req_timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self._dealer.poll(int(left * 1000) + 1):
                break
            reply = self._dealer.recv_multipart()
            try:
                header = parse_json_object(reply[1], max_bytes=MAX_MESSAGE_BYTES)
            except (IndexError, PeerError):
                log.warning("ignoring a malformed %s reply from the replay endpoint", command[:16])
                continue
            if header.get("id") != rid:
                continue  # a late answer to a request that timed out
            if reply[0] == b"ERROR":
                log.warning(
                    "replay endpoint refused %s: %s; going live-only",
                    command.decode(),
                    header.get("error"),
                )
                self._dealer.close(0)
                self._dealer = None
                return {"head": self.last, "last": self.last}, []
            self._last_heard = time.monotonic()
            return header, reply[2:]
        self.alive = False
        raise PublisherDead(
            f"replay endpoint {self._replay_endpoint} did not answer {command.decode()} "
            f"within {self._req_timeout:.1f} s (last seq {self.last})"
        )


def _parse(raw: bytes, what: str) -> dict[str, Any] | None:
    """``raw`` as a JSON object, bounded (size and depth); None, logged, when it is not one."""
    try:
        return parse_json_object(raw, max_bytes=MAX_MESSAGE_BYTES)
    except PeerError as exc:
        log.warning("ignoring %s from the server: %s", what, exc)
        return None


def _client_keys(
    server_key: bytes | str | Path | None, client_cert: str | Path | None
) -> tuple[bytes, bytes, bytes] | None:
    from stream.zsocket import load_client_keys

    return load_client_keys(server_key, client_cert)
