"""MQTT sink: every journaled event to an MQTT broker, with Frigate's topic layout.

:class:`MqttEventSink` tails the event journal (:mod:`stream.journal`) in its own thread and
publishes, for each event (payload: the event's JSON line, which carries ``seq``):

- ``PREFIX/events/<type>``: the event JSON, every event;
- ``PREFIX/<stream>/<zone>/<label>``: the occupancy count of ``zone.count`` events, retained;
- ``PREFIX/alerts``: the event JSON of ``alert`` events;
- ``PREFIX/available``: ``online``, and ``offline`` on close or as the last will, retained;
- ``DISCOVERY/binary_sensor/PREFIX/<id>/config`` (occupancy) and
  ``DISCOVERY/sensor/PREFIX/<id>/config`` (count): Home Assistant discovery, retained, sent
  at a zone's first ``zone.count``, on every connect and on Home Assistant's birth message.

Topic levels taken from events (stream, zone, label) have ``/``, ``+``, ``#`` replaced by
``_``. With MQTT 5 each event message also carries the user property ``seq``.

Delivery: at least once, in journal order. The thread publishes at most ``max_inflight``
messages the broker has not acknowledged (QoS 1 PUBACK, QoS 2 PUBCOMP; with QoS 0 "sent"
counts as acknowledged); paho sends the unacknowledged ones again after a reconnect. The
highest ``seq`` below which every event is acknowledged is written to the journal's ``meta``
table (key ``mqtt.HOST:PORT/PREFIX.acked_seq``) about once a second and on close; a sink
started on the same journal (a restarted publish stage, a restarted vigil) publishes again
what follows it. A consumer de-duplicates by ``seq``.

Never blocking the frame path: the publish stage only journals; this thread reads the journal
through its own SQLite connection, so a slow or absent broker costs the stage nothing. A broker
down at start-up or lost later is retried with capped exponential backoff
(``reconnect_min_s`` .. ``reconnect_max_s``) and logged once per outage.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: How often the thread looks for new journal rows when nothing wakes it, seconds.
POLL_S = 0.05
#: How often the acknowledged ``seq`` is written to the journal, seconds.
CHECKPOINT_EVERY_S = 1.0
#: Messages not tied to an event (availability, discovery) that may be in flight besides.
_EXTRA_INFLIGHT = 64


class MqttUnavailable(ImportError):
    """paho-mqtt is not installed."""


def _paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise MqttUnavailable("the MQTT sink needs paho-mqtt: pip install paho-mqtt") from exc
    return mqtt


def topic_level(name: Any) -> str:
    """``name`` made safe as one MQTT topic level (no ``/``, ``+``, ``#``, never empty)."""
    text = str(name) if name is not None else ""
    for ch in "/+#\0":
        text = text.replace(ch, "_")
    return text or "_"


def meta_key(host: str, port: int, topic_prefix: str) -> str:
    """The journal ``meta`` key holding the acknowledged ``seq`` for this broker and prefix."""
    return f"mqtt.{host}:{port}/{topic_prefix}.acked_seq"


class MqttEventSink:
    """Publish the events of the journal at ``journal_path``; see the module docstring.

    Args:
        journal_path: the event journal (SQLite file) the publish stage writes.
        host, port: the broker.
        topic_prefix: first topic level of every topic (Frigate: ``frigate``).
        qos: 0, 1 or 2 for every message; at-least-once needs 1 or 2.
        client_id: MQTT client id ("" lets paho choose a random one).
        username: user name; ``password`` its password (None: none).
        tls: connect with TLS; ``tls_ca_file``/``tls_cert_file``/``tls_key_file`` as
            :meth:`paho.mqtt.client.Client.tls_set` takes them (None: system CAs, no client cert).
        keepalive_s: MQTT keepalive, seconds (the broker sends the will after 1.5x this
            without traffic; a killed process's closed socket sends it at once).
        protocol: ``"5"`` or ``"3.1.1"``.
        discovery: publish Home Assistant discovery configs under ``discovery_prefix``.
        max_inflight: messages published and not yet acknowledged, at most.
        reconnect_min_s, reconnect_max_s: the reconnect backoff's first and largest delay.
        drain_timeout_s: how long :meth:`close` waits for the journal's events to be
            acknowledged before it gives up (they are published again by the next sink).
    """

    def __init__(
        self,
        journal_path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        topic_prefix: str = "vigil",
        qos: int = 1,
        client_id: str = "",
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
        tls_ca_file: str | Path | None = None,
        tls_cert_file: str | Path | None = None,
        tls_key_file: str | Path | None = None,
        keepalive_s: int = 60,
        protocol: str = "5",
        discovery: bool = False,
        discovery_prefix: str = "homeassistant",
        max_inflight: int = 100,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        drain_timeout_s: float = 5.0,
    ) -> None:
        mqtt = _paho()
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', not {protocol!r}")
        if any(ch in topic_prefix for ch in "+#\0"):
            raise ValueError(f"topic_prefix must not hold '+', '#' or NUL: {topic_prefix!r}")
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, not {max_inflight}")
        self.journal_path = Path(journal_path)
        self.host, self.port = host, port
        self.prefix = topic_prefix.rstrip("/")
        self.qos = qos
        self.discovery = discovery
        self.discovery_prefix = discovery_prefix.rstrip("/")
        self.max_inflight = max_inflight
        self.drain_timeout_s = drain_timeout_s
        self.keepalive_s = keepalive_s
        self._v5 = protocol == "5"
        self.published = 0  # messages handed to paho (events' and others')
        self.acked_seq = 0  # every event with seq <= this is acknowledged
        self.connect_failures = 0  # failed connection attempts and lost connections
        self.unacked = 0  # journaled events not acknowledged when the thread stopped
        self.failed = 0  # messages the broker refused (MQTT 5 reason code >= 0x80)
        self._mqtt = mqtt
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            **({} if self._v5 else {"clean_session": True}),
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set(
                ca_certs=None if tls_ca_file is None else str(tls_ca_file),
                certfile=None if tls_cert_file is None else str(tls_cert_file),
                keyfile=None if tls_key_file is None else str(tls_key_file),
            )
        self._client.max_inflight_messages_set(max_inflight + _EXTRA_INFLIGHT)
        self._client.max_queued_messages_set(0)  # unbounded in paho: the window bounds it
        self._client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)  # type: ignore[arg-type]
        self._client.will_set(self.topic_available, "offline", qos=max(qos, 1), retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        # Filled by paho's network thread, drained by ours: no lock shared with paho's.
        self._acks: collections.deque[tuple[int, bool]] = collections.deque()
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._outage_since: float | None = None  # monotonic start of the current outage
        self._ever_connected = False
        self._mids: dict[int, int] = {}  # mid -> seq, for event messages in flight
        self._left: dict[int, int] = {}  # seq -> its messages not yet acknowledged
        self._sensors: dict[str, tuple[str, str]] = {}  # discovery topic -> (payload, kind)
        self._cursor = 0  # the highest seq handed to paho
        self._journal: Any = None
        self._thread: threading.Thread | None = None
        self._next_checkpoint = 0.0

    # -- topics ------------------------------------------------------------------------------

    @property
    def topic_available(self) -> str:
        return f"{self.prefix}/available"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> MqttEventSink:
        """Connect in the background (retried, never raises for a broker
        that is down) and start the publishing thread. Returns self."""
        self._client.connect_async(
            self.host,
            self.port,
            keepalive=self.keepalive_s,
            **({"clean_start": True} if self._v5 else {}),
        )
        self._client.loop_start()  # paho's network thread; retries the first connect too
        self._thread = threading.Thread(target=self._run, name="vigil-mqtt", daemon=True)
        self._thread.start()
        return self

    def close(self) -> int:
        """Wait (at most ``drain_timeout_s``) until every journaled event is acknowledged,
        record how far that got, publish ``offline`` and disconnect.

        Returns the number of journaled events not acknowledged (sent again by the next sink).
        """
        if self._thread is None:
            return 0
        self._stop.set()
        self._wake.set()
        self._thread.join(self.drain_timeout_s + 10.0)
        if self._thread.is_alive():
            log.error("mqtt: publishing thread did not stop")
        self._thread = None
        if self._connected.is_set():
            info = self._client.publish(self.topic_available, "offline", qos=max(self.qos, 1),
                                        retain=True)  # fmt: skip
            try:
                info.wait_for_publish(timeout=min(self.drain_timeout_s, 2.0))
            except (RuntimeError, ValueError):  # the connection went meanwhile: the will says it
                pass
        self._client.disconnect()
        self._client.loop_stop()
        left = self.unacked
        if left:
            log.warning("mqtt: %d journaled events not acknowledged by the broker at close; "
                        "the next start sends them", left)  # fmt: skip
        return left

    # -- the publishing thread ---------------------------------------------------------------

    def _open_journal(self) -> None:
        """Open the journal (in this thread: SQLite connections stay in theirs) and resume
        after the acknowledged ``seq`` it records."""
        from stream.journal import EventJournal

        self._journal = EventJournal(self.journal_path, retention_s=None, max_rows=None)
        done = int(self._journal.get_meta(meta_key(self.host, self.port, self.prefix)) or 0)
        first = self._journal.first
        if done < first - 1:
            log.warning(
                "mqtt: events %d..%d were deleted by the journal's retention before the broker "
                "acknowledged them; they are not sent",
                done + 1,
                first - 1,
            )
            done = first - 1
        self.acked_seq = self._cursor = done
        if done < self._journal_head():
            log.info("mqtt: publishing the journaled events after seq %d", done)

    def _run(self) -> None:
        deadline: float | None = None
        try:
            self._open_journal()
            while True:
                self._wake.clear()
                self._take_acks()
                if self._stop.is_set():
                    if deadline is None:
                        deadline = time.monotonic() + self.drain_timeout_s
                    if self.acked_seq >= self._journal_head() or time.monotonic() >= deadline:
                        break
                if self._connected.is_set():
                    self._publish_more()
                if time.monotonic() >= self._next_checkpoint:
                    self._checkpoint()
                self._wake.wait(POLL_S)
            self._take_acks()
            self._checkpoint()
            self.unacked = max(self._journal_head() - self.acked_seq, 0)
        except Exception:  # a journal error: logged, the stage goes on without MQTT
            log.exception("mqtt: publishing thread failed")
        finally:
            if self._journal is not None:
                self._journal.close()
                self._journal = None

    def _publish_more(self) -> None:
        room = self.max_inflight - len(self._mids)
        if room <= 0:
            return
        for line in self._journal.read_after(self._cursor, limit=room):
            try:
                event = json.loads(line)
                seq = int(event["seq"])
            except (ValueError, KeyError, TypeError):
                log.error("mqtt: unreadable journal row after seq %d dropped", self._cursor)
                self._cursor += 1
                self._left[self._cursor] = 0  # nothing to wait for
                continue
            if seq > self._cursor + 1:  # retention deleted rows not yet sent (a long outage)
                if self.acked_seq < self._cursor:
                    break  # jump once what is in flight is acknowledged
                log.warning("mqtt: events %d..%d were deleted by the journal's retention "
                            "before they were sent", self._cursor + 1, seq - 1)  # fmt: skip
                self.acked_seq = self._cursor = seq - 1
            messages = self.messages_for(event, line)
            self._left[seq] = len(messages)
            for topic, payload, retain in messages:
                self._send(topic, payload, retain, seq)
            self._cursor = seq
            if not self._connected.is_set():  # the rest waits for the reconnect
                break

    def _send(self, topic: str, payload: str, retain: bool, seq: int | None) -> None:
        props = None
        if self._v5 and seq is not None:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = ("seq", str(seq))
        info = self._client.publish(topic, payload, qos=self.qos, retain=retain, properties=props)
        self.published += 1
        if seq is not None:
            self._mids[info.mid] = seq

    def messages_for(self, event: dict[str, Any], line: str) -> list[tuple[str, str, bool]]:
        """``(topic, payload, retain)`` of the messages for one event (``line``: its JSON).
        With discovery on, a zone's first ``zone.count`` also publishes its discovery configs."""
        kind = str(event.get("type") or "unknown")
        out = [(f"{self.prefix}/events/{topic_level(kind)}", line, False)]
        if kind == "zone.count":
            stream = topic_level(event.get("stream"))
            zone, label = topic_level(event.get("zone")), topic_level(event.get("label"))
            state = f"{self.prefix}/{stream}/{zone}/{label}"
            if self.discovery:
                for topic, payload in self._discovery(stream, zone, label, state):
                    if topic not in self._sensors:
                        self._sensors[topic] = (payload, state)
                        self._send(topic, payload, True, None)
            out.append((state, str(int(event.get("count") or 0)), True))
        elif kind == "alert":
            out.append((f"{self.prefix}/alerts", line, False))
        return out

    def _discovery(self, stream: str, zone: str, label: str, state: str) -> list[tuple[str, str]]:
        """Home Assistant discovery configs for one zone's occupancy of one label."""
        node = topic_level(self.prefix)
        base = f"{node}_{stream}_{zone}_{label}"
        device = {"identifiers": [f"{node}_{stream}"], "name": f"{node} {stream}",
                  "manufacturer": "vigil"}  # fmt: skip
        common = {"state_topic": state, "availability_topic": self.topic_available,
                  "device": device}  # fmt: skip
        occupancy = {
            **common,
            "name": f"{zone} {label} occupancy",
            "unique_id": f"{base}_occupancy",
            "device_class": "occupancy",
            "value_template": "{{ 'ON' if value | int > 0 else 'OFF' }}",
        }
        count = {
            **common,
            "name": f"{zone} {label} count",
            "unique_id": f"{base}_count",
            "state_class": "measurement",
        }
        root = self.discovery_prefix
        return [
            (f"{root}/binary_sensor/{node}/{base}_occupancy/config", json.dumps(occupancy)),
            (f"{root}/sensor/{node}/{base}_count/config", json.dumps(count)),
        ]

    def _take_acks(self) -> None:
        while self._acks:
            mid, ok = self._acks.popleft()
            seq = self._mids.pop(mid, None)
            if seq is None:  # availability or discovery
                continue
            if not ok:
                self.failed += 1
                log.error("mqtt: the broker refused a message of event seq %d", seq)
            self._left[seq] -= 1
        while self._left.get(self.acked_seq + 1) == 0:
            self.acked_seq += 1
            del self._left[self.acked_seq]

    def _checkpoint(self) -> None:
        self._next_checkpoint = time.monotonic() + CHECKPOINT_EVERY_S
        if self._journal is None:
            return
        key = meta_key(self.host, self.port, self.prefix)
        if self._journal.get_meta(key) != str(self.acked_seq):
            self._journal.set_meta(key, str(self.acked_seq))

    def _journal_head(self) -> int:
        if self._journal is None:
            return 0
        # A writer's EventJournal.head is its own count; another process appends to this one.
        row = self._journal._db.execute("SELECT max(seq) FROM events").fetchone()
        return row[0] or 0

    # -- paho callbacks (paho's network thread) ----------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._outage(f"connection refused: {reason}")
            return
        client.publish(self.topic_available, "online", qos=max(self.qos, 1), retain=True)
        if self.discovery:  # Home Assistant's birth message asks for discovery again
            client.subscribe(f"{self.discovery_prefix}/status", qos=1)
        self._resend_discovery()
        if self._outage_since is not None and self._ever_connected:
            log.warning("mqtt: connected to %s:%d again after %.0f s; resending from seq %d",
                        self.host, self.port, time.monotonic() - self._outage_since,
                        self.acked_seq + 1)  # fmt: skip
        elif self._outage_since is not None:
            log.info("mqtt: connected to %s:%d", self.host, self.port)
        self._outage_since = None
        self._ever_connected = True
        self._connected.set()
        self._wake.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if msg.topic == f"{self.discovery_prefix}/status" and msg.payload == b"online":
            self._resend_discovery()

    def _resend_discovery(self) -> None:
        """Publish the discovery configs known so far again (a broker or Home Assistant that
        restarted may have lost them)."""
        for topic, (payload, _state) in list(self._sensors.items()):
            self._client.publish(topic, payload, qos=self.qos, retain=True)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self._outage("cannot connect")

    def _on_disconnect(self, client: Any, _data: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self._connected.clear()
        if not self._stop.is_set() or reason.is_failure:
            self._outage(f"disconnected: {reason}")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._acks.append((mid, not reason.is_failure))
        self._wake.set()

    def _outage(self, why: str) -> None:
        """Log the first failure of an outage only; the journal keeps the events meanwhile."""
        self._connected.clear()
        self.connect_failures += 1
        if self._outage_since is not None:
            return
        self._outage_since = time.monotonic()
        log.warning("mqtt: broker %s:%d: %s; retrying with backoff, events stay journaled",
                    self.host, self.port, why)  # fmt: skip
