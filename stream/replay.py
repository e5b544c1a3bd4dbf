"""The feed server: live events, heartbeats, replay and snapshots, in one thread of the
publisher's process.

:class:`FeedServer` owns the event PUB socket (an XPUB), the replay ROUTER socket and a
read-only connection to the journal. :class:`stream.sinks.EventPublisher` journals (commits)
each event in its own thread, then hands the JSON line to the server over an ``inproc`` pipe;
the server forwards it live. ZeroMQ sockets are not thread-safe, so each is used by one thread.

Wire protocol (schema version 1)
================================

Live feed (PUB endpoint, e.g. ``tcp://127.0.0.1:5555``), two-frame messages:

- ``[type, event_json]``: one event; topic = event type (subscribe by type prefix).
- ``[b"HEARTBEAT", {"head": H, "epoch": E, "interval_s": s, "ts": unix_s}]``: sent every
  ``heartbeat_s`` and at once when a subscriber joins, but only while some subscriber has
  subscribed to the ``HEARTBEAT`` topic (so plain subscribers are not disturbed). ``head`` is
  the highest ``seq`` published live so far: every event up to it was sent before this
  message, on the same socket, in order. ``epoch`` changes when the publisher restarts.

Replay endpoint (ROUTER, e.g. ``tcp://127.0.0.1:5556``); a client uses a DEALER (or REQ)
socket and sends two-frame requests ``[command, json_body]`` of at most 64 KiB:

- ``[b"REPLAY", {"after": N, "limit": L, "id": any}]`` -> ``[b"EVENTS", header, event_json...]``
  with ``header = {"id", "after": N, "last": S, "first": F, "head": H, "more": bool}``: the
  events with ``seq > N`` in order, at most ``min(L, max_chunk)`` of them. ``last`` is the seq
  of the last event sent (``N`` if none); ``first`` the oldest seq the journal still holds (if
  ``first > N + 1`` the events between were deleted by retention); ``head`` the journal's
  newest seq; ``more`` whether events after ``last`` exist. Ask again with ``after = last``
  until ``more`` is false: the client pulls chunk by chunk, so both sides stay bounded.
- ``[b"SNAPSHOT", {"id": any}]`` -> ``[b"SNAPSHOT", {"id", "head": H}, event_json...]``: the
  open state at ``head`` — per stream its latest ``stream.online``/``stream.offline`` and the
  ``track.start`` of tracks not yet ended, in seq order. Apply it, then live events with
  ``seq > H``.
- ``[b"HEAD", {"id": any}]`` -> ``[b"HEAD", {"id", "head": H, "first": F, "epoch": E}]``.
- A known command with a bad body gets ``[b"ERROR", {"id", "error": text}]`` (``id`` echoed
  when it is a scalar, a string one cut to its first 128 characters): not JSON, not
  an object, nested deeper than 16, an integer out of range (``after`` in [0, 2**63-1],
  ``limit`` >= 1). Anything else (unknown command, wrong frame count, over 64 KiB) is logged
  and ignored; a message over ``max_message_bytes`` (default 1 MiB) makes ZeroMQ drop the
  connection. No request can stop the server: each is handled in its own ``try``.
- Limits per client: a reply holds at most ``max_chunk`` events and about
  ``max_reply_bytes`` (1 MiB; ``more`` says the rest is to be asked for); at most ``hwm``
  (8) replies wait for a client that does not read, further ones are dropped; at most
  ``max_clients`` (32) clients are served REPLAY at once (a client counts until it has been
  quiet for 30 s): a new one beyond gets ``ERROR`` ``too many replay clients``. So replay
  answers can hold at most ``max_clients * hwm * max_reply_bytes`` (256 MiB by default).

A late joiner follows the zguide "Clone" pattern (see :class:`stream.client.EventClient`):
subscribe to live events and ``HEARTBEAT``, wait for the first message (which proves the
subscription is active and gives a head), fetch the replay (or snapshot) up to that head,
then take live events with ``seq`` greater than the last one applied.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import zmq

from stream.journal import EventJournal, OpenState
from stream.zsocket import (
    MAX_PEER_INT,
    CurveServerKeys,
    PeerError,
    SocketLimits,
    check_int,
    parse_json_object,
    server_socket,
)

log = logging.getLogger(__name__)

HEARTBEAT = b"HEARTBEAT"
MAX_REQUEST_BYTES = 64 * 1024
#: ZeroMQ drops a peer that sends a message larger than this (protects memory).
MAX_MESSAGE_BYTES = 1024 * 1024
DEFAULT_MAX_CHUNK = 1000
DEFAULT_MAX_REPLY_BYTES = 1024 * 1024
DEFAULT_REPLAY_HWM = 8
DEFAULT_MAX_CLIENTS = 32
#: A replay client counts towards ``max_clients`` until it has been quiet this long.
CLIENT_IDLE_S = 30.0
_STOP = b"$STOP"


class FeedServer(threading.Thread):
    """The thread that publishes live events and heartbeats and answers replay requests.

    Args:
        ctx: the process's ZeroMQ context.
        pub: a bound XPUB socket, handed over by its creating thread (the thread start is the
            memory fence ZeroMQ asks for); this thread owns it from now on.
        pipe_endpoint: ``inproc://`` endpoint the publisher's PUSH socket connects to.
        journal_path: journal to answer REPLAY/SNAPSHOT from (None: those return ERROR).
        replay_endpoint: where to bind the ROUTER (None: no replay endpoint).
        heartbeat_s: heartbeat period in seconds (None: no heartbeats).
        heartbeat_subscribed: whether a subscriber already asked for heartbeats.
        max_chunk: most events per REPLAY answer.
        curve: CURVE keys of the server (and client allow-list) for the ROUTER socket; None
            for plain TCP.
        max_message_bytes: inbound message cap of the ROUTER (ZeroMQ drops a bigger sender).
        max_reply_bytes: a REPLAY answer stops adding events past this many bytes.
        hwm: replies queued per client that does not read (further ones are dropped).
        max_clients: clients served at once (see the module's text).
    """

    def __init__(
        self,
        ctx: zmq.Context,
        pub: zmq.Socket,
        pipe_endpoint: str,
        *,
        journal_path: str | Path | None = None,
        replay_endpoint: str | None = None,
        heartbeat_s: float | None = 1.0,
        heartbeat_subscribed: bool = False,
        max_chunk: int = DEFAULT_MAX_CHUNK,
        curve: CurveServerKeys | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        hwm: int = DEFAULT_REPLAY_HWM,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        super().__init__(name="vigil-feed", daemon=True)
        self.epoch = uuid.uuid4().hex[:12]
        self.head = 0
        self.forwarded = 0
        self.rejected = 0
        self.served = 0
        self.faults = 0  # unexpected exceptions contained (logged with their traceback)
        self.error: BaseException | None = None
        self._ctx = ctx
        self._pub = pub
        self._heartbeat_s = heartbeat_s
        self._hb_wanted = heartbeat_subscribed
        self._max_chunk = max(1, max_chunk)
        self._max_request = min(MAX_REQUEST_BYTES, max_message_bytes)
        self._max_reply_bytes = max(1, max_reply_bytes)
        self._max_clients = max(1, max_clients)
        self._clients: dict[bytes, float] = {}  # identity -> last request (monotonic s)
        self._journal_path = journal_path
        self._state = OpenState()
        self._state_seq = 0
        self._pipe = ctx.socket(zmq.PULL)
        self._pipe.setsockopt(zmq.RCVHWM, 0)
        self._pipe.setsockopt(zmq.LINGER, 0)
        self._pipe.bind(pipe_endpoint)
        self._router: zmq.Socket | None = None
        if replay_endpoint:
            limits = SocketLimits(max_message_bytes=max_message_bytes, sndhwm=hwm, rcvhwm=1000)
            try:
                self._router = server_socket(
                    ctx, zmq.ROUTER, replay_endpoint, limits=limits, curve=curve
                )
            except BaseException:
                self._pipe.close()
                raise
            self._router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # past the HWM: drop, never block
        self._ready = threading.Event()

    # -- thread ----------------------------------------------------------------------------

    def start_and_wait(self, timeout_s: float = 10.0) -> None:
        """Start the thread and wait until it has read the journal's open state."""
        self.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"feed server not ready within {timeout_s} s")
        if self.error is not None:
            raise RuntimeError(f"feed server failed: {self.error}") from self.error

    def run(self) -> None:
        reader: EventJournal | None = None
        try:
            if self._journal_path is not None:
                reader = EventJournal.open_reader(self._journal_path)
                for line in reader.open_state():
                    self._state.apply(json.loads(line), line)
                self._state_seq = reader.head
                self.head = self._state_seq
            self._ready.set()
            self._loop(reader)
        except BaseException as exc:  # reaches the publisher on close()
            log.exception("feed server failed")
            self.error = exc
            self._ready.set()
        finally:
            if reader is not None:
                reader.close()
            self._pipe.close()
            if self._router is not None:
                self._router.close()
            self._pub.close()  # LINGER lets queued events reach connected subscribers

    def _loop(self, reader: EventJournal | None) -> None:
        poller = zmq.Poller()
        poller.register(self._pipe, zmq.POLLIN)
        poller.register(self._pub, zmq.POLLIN)
        if self._router is not None:
            poller.register(self._router, zmq.POLLIN)
        next_hb = time.monotonic() + (self._heartbeat_s or 0)
        while True:
            wait_ms = None
            if self._heartbeat_s:
                wait_ms = max(0, int((next_hb - time.monotonic()) * 1000))
            ready = dict(poller.poll(wait_ms))
            if self._pipe in ready:
                for _ in range(1000):  # forward a batch, then look at the other sockets
                    try:
                        frames = self._pipe.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if frames[0] == _STOP:
                        return
                    self._contain("forward", self._forward, frames)
            if self._pub in ready:
                self._contain("subscriptions", self._subscriptions)
            if self._router is not None and self._router in ready:
                for _ in range(100):
                    try:
                        msg = self._router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._contain("replay request", self._serve, msg, reader)
            if self._heartbeat_s and time.monotonic() >= next_hb:
                self._contain("heartbeat", self._heartbeat)
                next_hb = time.monotonic() + self._heartbeat_s

    def _contain(self, what: str, handler: Any, *args: Any) -> None:
        """Run one message's handler; an exception costs that message only, never the thread."""
        try:
            handler(*args)
        except zmq.ContextTerminated:
            raise
        except Exception:
            self.faults += 1
            log.exception("feed server: %s failed; message dropped, still serving", what)

    def _forward(self, frames: list[bytes]) -> None:
        topic, line, seq_b = frames
        seq = int(seq_b)
        self._pub.send_multipart([topic, line])  # XPUB drops for a subscriber at its HWM
        self.head = max(self.head, seq)
        self.forwarded += 1
        if seq > self._state_seq:
            text = line.decode()
            self._state.apply(json.loads(text), text)
            self._state_seq = seq

    def _subscriptions(self) -> None:
        while True:
            try:
                msg = self._pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[1:] == HEARTBEAT:
                self._hb_wanted = msg[:1] == b"\x01"
            if msg[:1] == b"\x01" and self._heartbeat_s:
                self._heartbeat()  # a joiner learns the head (and that it is subscribed) now

    def _heartbeat(self) -> None:
        if not self._hb_wanted:
            return
        body = {
            "head": self.head,
            "epoch": self.epoch,
            "interval_s": self._heartbeat_s,
            "ts": round(time.time(), 3),
        }
        self._pub.send_multipart([HEARTBEAT, json.dumps(body).encode()])

    # -- replay ----------------------------------------------------------------------------

    def _serve(self, msg: list[bytes], reader: EventJournal | None) -> None:
        assert self._router is not None
        envelope, frames = msg[:1], msg[1:]
        if len(frames) == 3 and frames[0] == b"":  # a REQ client: keep its delimiter
            envelope, frames = msg[:2], msg[2:]
        size = sum(len(f) for f in frames)
        if len(frames) != 2 or size > self._max_request:
            self._reject(f"{len(frames)} frames, {size} bytes")
            return
        command, raw = frames
        if command not in (b"REPLAY", b"SNAPSHOT", b"HEAD"):
            self._reject(f"unknown command {command[:32]!r}")
            return
        body: dict[str, Any] = {}
        try:
            body = parse_json_object(raw, max_bytes=self._max_request) if raw else {}
            if command == b"REPLAY":  # the big answers; HEAD and SNAPSHOT stay open to all
                self._admit(envelope[0])
            reply = self._answer(command, body, reader)
        except (PeerError, ValueError, TypeError, KeyError) as exc:
            self.rejected += 1
            log.warning("replay: bad %s request: %s", command.decode(), exc)
            reply = self._error(body, f"{type(exc).__name__}: {exc}")
        except Exception:  # a bug or the journal: this request fails, the server goes on
            self.faults += 1
            log.exception("replay: %s request failed", command.decode())
            reply = self._error(body, "internal error")
        try:
            self._router.send_multipart([*envelope, *reply], zmq.NOBLOCK)
            self.served += 1
        except zmq.ZMQError as exc:  # the client went away or stopped reading
            log.info("replay: reply dropped: %s", exc)

    @staticmethod
    def _error(body: dict[str, Any], text: str) -> list[bytes]:
        rid = body.get("id")
        if not isinstance(rid, (str, int, float, bool, type(None))):
            rid = None  # echo scalars only: a reply never grows with what a peer sent
        elif isinstance(rid, str):
            rid = rid[:128]  # nor with a long string id (the protocol docstring says 128)
        return [b"ERROR", json.dumps({"id": rid, "error": text[:300]}).encode()]

    def _admit(self, identity: bytes) -> None:
        """Count ``identity`` as a client; refuse a new one beyond ``max_clients``."""
        now = time.monotonic()
        if identity not in self._clients and len(self._clients) >= self._max_clients:
            for peer, seen in list(self._clients.items()):
                if now - seen > CLIENT_IDLE_S:
                    del self._clients[peer]
            if len(self._clients) >= self._max_clients:
                raise PeerError(f"too many replay clients ({self._max_clients}); try later")
        self._clients[identity] = now

    def _reject(self, what: str) -> None:
        self.rejected += 1
        log.warning("replay: ignored a malformed request (%s)", what)

    def _answer(
        self, command: bytes, body: dict[str, Any], reader: EventJournal | None
    ) -> list[bytes]:
        rid = body.get("id")
        if not isinstance(rid, (str, int, float, bool, type(None))):
            raise PeerError("'id' must be a string or a number")
        if command == b"SNAPSHOT":
            lines = self._state.lines()
            header = {"id": rid, "head": self._state_seq}
            return [b"SNAPSHOT", json.dumps(header).encode(), *(x.encode() for x in lines)]
        if reader is None:
            raise ValueError("this publisher keeps no journal")
        if command == b"HEAD":
            header = {"id": rid, "head": reader.head, "first": reader.first, "epoch": self.epoch}
            return [b"HEAD", json.dumps(header).encode()]
        if "after" not in body:
            raise PeerError("REPLAY needs 'after'")
        after = check_int(body["after"], "after", 0, MAX_PEER_INT)
        limit = check_int(body.get("limit", self._max_chunk), "limit", 1, MAX_PEER_INT)
        head = reader.head
        lines: list[str] = []
        size = 0
        for line in reader.read_after(after, min(limit, self._max_chunk), upto=head):
            lines.append(line)
            size += len(line)
            if size >= self._max_reply_bytes:  # the client asks again for the rest
                break
        last = json.loads(lines[-1])["seq"] if lines else after
        header = {
            "id": rid,
            "after": after,
            "last": last,
            "first": reader.first,
            "head": head,
            "more": last < head,
        }
        return [b"EVENTS", json.dumps(header).encode(), *(x.encode() for x in lines)]

    # -- called from the publisher's thread ------------------------------------------------

    @staticmethod
    def stop_message() -> list[bytes]:
        return [_STOP]
