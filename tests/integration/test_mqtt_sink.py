"""MQTT sink against Debian's mosquitto on 127.0.0.1 (skipped when it is not installed)."""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream.journal import EventJournal
from stream.sinks import EventPublisher
from tests.support.feed import event

mqtt = pytest.importorskip("paho.mqtt.client")

from stream.mqtt_sink import MqttEventSink, meta_key  # noqa: E402

MOSQUITTO = shutil.which("mosquitto", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
ROOT = Path(__file__).resolve().parents[2]


class Broker:
    """A mosquitto bound to 127.0.0.1:port, persisting sessions in its folder across restarts."""

    def __init__(self, folder: Path, port: int) -> None:
        self.port = port
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {folder}/\nautosave_interval 0\n"
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n"  # as root it would drop to 'mosquitto'
        )
        self.proc: subprocess.Popen | None = None
        self.log = open(folder / "mosquitto.log", "ab")  # noqa: SIM115

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions (the subscribers' queued messages) first."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path, free_port: int) -> Iterator[Broker]:
    if MOSQUITTO is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    folder = tmp_path / "broker"
    folder.mkdir()
    b = Broker(folder, free_port)
    b.start()
    yield b
    b.stop()
    b.log.close()


class Subscriber:
    """A paho client with a persistent session that records every message it gets."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("vigil/#",), name: str = "") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        persistent = bool(name)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=name,
            protocol=mqtt.MQTTv311,
            clean_session=not persistent,
        )
        self.client.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]
        self.subscribed = threading.Event()

        def on_connect(client, _u, _f, reason, _p) -> None:
            if not reason.is_failure:
                client.subscribe([(t, 1) for t in topics])

        def on_subscribe(*_a) -> None:
            self.subscribed.set()

        def on_message(_c, _u, msg) -> None:
            with self._lock:
                self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect_async("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(20), "subscriber did not subscribe"

    def got(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def wait(self, ok: Callable[[list[tuple[str, bytes, bool]]], bool], timeout_s: float = 30):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = self.got()
            if ok(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"timed out; got {[(t, p[:80]) for t, p, _r in self.got()]}")

    def event_seqs(self) -> list[int]:
        return [json.loads(p)["seq"] for t, p, _r in self.got() if t.startswith("vigil/events/")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def sink_for(journal: Path, broker: Broker, **kw) -> MqttEventSink:
    opts = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5, "drain_timeout_s": 20.0, **kw}
    return MqttEventSink(journal, port=broker.port, **opts)


def acked(journal: Path, port: int) -> int:
    with EventJournal.open_reader(journal) as j:
        return int(j.get_meta(meta_key("127.0.0.1", port, "vigil")) or 0)


def test_topics_retained_occupancy_alerts_and_discovery(tmp_path: Path, broker: Broker) -> None:
    path = tmp_path / "j.sqlite"
    with EventJournal(path) as j:  # zone.count rows as the zones stage will write them
        j.append(event("track.start", track=1, label="person"))
        j.append(event("zone.count", zone="door", label="person", count=2))
        j.append(event("alert", name="fall", severity="high", track=1, zone="door"))
        j.append(event("zone.count", zone="door", label="person", count=1))
        j.append(event("zone.count", stream="cam/2", zone="yard+", label="car", count=3))
    live = Subscriber(broker.port, ("vigil/#", "homeassistant/#"))
    sink = sink_for(path, broker, discovery=True).start()
    live.wait(lambda got: len([m for m in got if m[0].startswith("vigil/events/")]) == 5)
    # Home Assistant restarts and says so: the discovery configs come again.
    ha = "homeassistant/binary_sensor/vigil/vigil_cam1_door_person_occupancy/config"
    assert [t for t, _p, _r in live.got()].count(ha) == 1
    live.client.publish("homeassistant/status", "online", qos=1)
    live.wait(lambda got: [t for t, _p, _r in got].count(ha) == 2)
    assert sink.close() == 0
    assert acked(path, broker.port) == 5
    topics = [t for t, _p, _r in live.got()]
    assert topics.count("vigil/events/zone.count") == 3
    assert topics.count("vigil/alerts") == 1 and "vigil/events/alert" in topics
    assert "vigil/cam_2/yard_/car" in topics  # levels from names made safe
    # A late subscriber gets the retained state: occupancy, availability, discovery.
    late = Subscriber(broker.port, ("vigil/#", "homeassistant/#"))
    got = late.wait(lambda got: len(got) >= 6)
    retained = {t: p for t, p, r in got if r}
    assert retained["vigil/cam1/door/person"] == b"1"
    assert retained["vigil/cam_2/yard_/car"] == b"3"
    assert retained["vigil/available"] == b"offline"  # said on a clean close
    config = json.loads(retained[ha])
    assert config["state_topic"] == "vigil/cam1/door/person"
    assert config["availability_topic"] == "vigil/available"
    count = json.loads(retained["homeassistant/sensor/vigil/vigil_cam1_door_person_count/config"])
    assert count["state_topic"] == "vigil/cam1/door/person"
    assert not any(t.startswith("vigil/events/") for t in retained)
    alert = next(json.loads(p) for t, p, _r in live.got() if t == "vigil/alerts")
    assert alert["name"] == "fall" and alert["seq"] == 3
    live.close()
    late.close()


_KILLED_SINK = """
import sys, time
from stream.mqtt_sink import MqttEventSink
sink = MqttEventSink(sys.argv[1], port=int(sys.argv[2]), reconnect_min_s=0.1).start()
time.sleep(600)
"""


def test_last_will_says_offline_when_the_process_is_killed(tmp_path: Path, broker: Broker) -> None:
    """Fault: the process holding the connection is SIGKILLed; only the will can say so."""
    path = tmp_path / "j.sqlite"
    EventJournal(path).close()
    sub = Subscriber(broker.port, ("vigil/available",))
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_SINK, str(path), str(broker.port)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:
        sub.wait(lambda got: (got[-1][1] if got else None) == b"online")
        os.kill(proc.pid, signal.SIGKILL)
        sub.wait(lambda got: got[-1][1] == b"offline")
    finally:
        proc.kill()
        proc.wait(10)
        sub.close()


def test_parity_with_events_jsonl_across_a_broker_restart(
    tmp_path: Path, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Fault: the broker goes away mid-run; events journaled meanwhile must still arrive, and
    the outage is logged once however many reconnects fail."""
    caplog.set_level(logging.WARNING, logger="stream.mqtt_sink")
    path = tmp_path / "j.sqlite"
    publisher = EventPublisher(jsonl_path=tmp_path / "events.jsonl", journal=EventJournal(path))
    sub = Subscriber(broker.port, name="parity")  # a persistent session: queued while away
    sink = sink_for(path, broker).start()
    for i in range(20):
        publisher.publish(event(count=i, total=i))
    sub.wait(lambda got: len(got) >= 21)  # available + 20 events
    broker.stop()
    for i in range(20, 50):  # journaled while the broker is down: the publisher never waits
        publisher.publish(event(count=i, total=i))
    wait_until(lambda: sink.connect_failures >= 4)
    broker.start()
    for i in range(50, 60):
        publisher.publish(event(count=i, total=i))
    publisher.close()
    sub.wait(lambda got: set(sub.event_seqs()) >= set(range(1, 61)), timeout_s=60)
    assert sink.close() == 0
    jsonl = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    received = {}
    for topic, payload, _r in sub.got():
        if topic.startswith("vigil/events/"):
            received.setdefault(json.loads(payload)["seq"], json.loads(payload))
    assert [received[s] for s in sorted(received)] == jsonl
    assert acked(path, broker.port) == 60
    said = [r.getMessage() for r in caplog.records if r.name == "stream.mqtt_sink"]
    assert len([m for m in said if "retrying with backoff" in m]) == 1, said
    sub.close()


def wait_until(ok: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_broker_down_at_start_is_retried_then_restart_resends_what_was_not_acked(
    tmp_path: Path, broker: Broker
) -> None:
    """Fault: vigil stops while the broker is down; the next start sends what was not acked."""
    path = tmp_path / "j.sqlite"
    with EventJournal(path) as j:
        for i in range(3):
            j.append(event(count=i, total=i))
    first_sub = Subscriber(broker.port)  # before the sink: it would miss what came first
    first = sink_for(path, broker).start()
    first_sub.wait(lambda got: len(got) >= 4)
    assert first.close() == 0 and acked(path, broker.port) == 3
    first_sub.close()
    broker.stop()
    with EventJournal(path) as j:
        for i in range(3, 8):
            j.append(event(count=i, total=i))
    down = sink_for(path, broker, drain_timeout_s=0.5).start()  # retried, not an error
    assert down.close() == 5  # bounded: close gives up on a broker that is away
    assert acked(path, broker.port) == 3
    broker.start()
    sub = Subscriber(broker.port)
    again = sink_for(path, broker).start()
    sub.wait(lambda got: set(sub.event_seqs()) >= {4, 5, 6, 7, 8})
    assert again.close() == 0
    assert sorted(set(sub.event_seqs())) == [4, 5, 6, 7, 8]  # what was acked is not sent again
    assert acked(path, broker.port) == 8
    sub.close()


def test_a_full_window_waits_for_acks(tmp_path: Path, broker: Broker) -> None:
    """More events than the in-flight window: all arrive, in journal order."""
    path = tmp_path / "j.sqlite"
    with EventJournal(path) as j:
        for i in range(40):
            j.append(event(count=i, total=i))
    sub = Subscriber(broker.port)
    sink = sink_for(path, broker, max_inflight=3).start()
    sub.wait(lambda got: len(sub.event_seqs()) >= 40)
    assert sink.close() == 0
    assert sub.event_seqs() == list(range(1, 41))
    sub.close()


@pytest.mark.slow
def test_whole_graph_killed_then_rerun_parity_with_the_journal(
    tmp_path: Path, broker: Broker
) -> None:
    """`vigil process` with publish.mqtt: its publish stage is SIGKILLed mid-run (the will says
    offline), then a second run on the same output folder sends what the first left unsent, and a
    subscriber that de-duplicates by seq ends with exactly the journal's events."""
    from tests.integration.test_end_to_end import FAST
    from tests.support.videos import write_moving_box_video

    video = write_moving_box_video(tmp_path / "v.mp4", n_frames=10)
    out = tmp_path / "out"
    sub = Subscriber(broker.port, name="graph")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "VIGIL__DETECT__MAX_DETECTIONS": "8",
        "VIGIL__PUBLISH__MQTT": f"{{port: {broker.port}, discovery: true, drain_timeout_s: 30}}",
    }
    cmd = [sys.executable, "-m", "pipeline.cli", "process", str(video), "--out", str(out), *FAST]
    killed = subprocess.run(
        cmd, env={**env, "VIGIL_INJECT_FAULT": "publish:8:kill"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert killed.returncode == 1 and "SIGKILL" in killed.stderr, killed.stderr
    states = sub.wait(lambda got: availability(got)[-1:] == [b"offline"])
    assert availability(states) == [b"online", b"offline"]  # nobody but the will said offline

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    with EventJournal.open_reader(out / "events.journal.sqlite") as j:
        journaled = [json.loads(line) for line in j.read_after(0)]
        assert int(j.get_meta(meta_key("127.0.0.1", broker.port, "vigil")) or 0) == j.head
    second = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert second == journaled[-len(second) :]  # the rerun's events.jsonl: the journal's tail
    want = {e["seq"] for e in journaled}
    sub.wait(lambda got: set(sub.event_seqs()) >= want, timeout_s=60)
    received = {}
    for topic, payload, _r in sub.got():
        if topic.startswith("vigil/events/"):
            received.setdefault(json.loads(payload)["seq"], json.loads(payload))
    assert [received[s] for s in sorted(received)] == journaled
    assert availability(sub.got()) == [b"online", b"offline", b"online", b"offline"]
    sub.close()


def availability(got: list[tuple[str, bytes, bool]]) -> list[bytes]:
    return [p for t, p, _r in got if t == "vigil/available"]


def test_mqtt_without_the_journal_is_a_config_error() -> None:
    """The sink feeds from the journal: with ``publish.journal: off`` it would send nothing."""
    from pipeline.config import ConfigError, load_config

    assert load_config(overrides={"publish.mqtt": {"port": 1884}}).publish.mqtt.port == 1884
    with pytest.raises(ConfigError, match="feeds from the event journal"):
        load_config(overrides={"publish.mqtt": {"port": 1884}, "publish.journal": "off"})


def test_events_deleted_by_retention_during_an_outage_do_not_stall_the_sink(
    tmp_path: Path, broker: Broker
) -> None:
    """Fault: an outage outlasts the journal's retention; the rows never sent are gone. The
    sink sends what is left and its acknowledged seq still reaches the head."""
    path = tmp_path / "j.sqlite"
    broker.stop()
    writer = EventJournal(path, max_rows=3, keep_s=0.0)
    sink = sink_for(path, broker).start()
    # It resumed from the journal before the rows go (else its start-up skips them).
    wait_until(lambda: sink._journal is not None and sink.connect_failures >= 1)
    for i in range(10):
        writer.append(event(count=i, total=i))
    assert writer.prune() > 0 and writer.first == 8
    broker.start()
    sub = Subscriber(broker.port)
    sub.wait(lambda got: set(sub.event_seqs()) >= {8, 9, 10})
    assert sink.close() == 0
    assert sorted(set(sub.event_seqs())) == [8, 9, 10]
    assert acked(path, broker.port) == 10
    writer.close()
    sub.close()
