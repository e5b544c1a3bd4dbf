from __future__ import annotations

import json

import numpy as np
import pytest
import zmq

from stream import events as ev
from stream import wire


def test_wire_round_trip_over_a_real_socket_keeps_dtype_and_shape():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.bind("inproc://w")
    b.connect("inproc://w")
    arrays = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "e": np.zeros((0, 4), np.int64)}
    wire.send(a, {"kind": "frame", "n": 1}, arrays)
    header, got = wire.recv(b)
    assert header == {"kind": "frame", "n": 1}
    np.testing.assert_array_equal(got["x"], arrays["x"])
    assert got["e"].shape == (0, 4) and got["e"].dtype == np.int64
    a.close(), b.close(), ctx.term()


@pytest.mark.parametrize(
    "frames", [[], [b"not json"], [json.dumps({"h": {}, "a": [["x", "<f4", [1]]]}).encode()]]
)
def test_wire_rejects_malformed_messages(frames):
    with pytest.raises(ValueError):
        wire.decode(frames)


def test_event_has_schema_fields_in_order_and_utc_millisecond_ts():
    e = ev.make_event(
        "action.forecast",
        "cam1",
        frame=913,
        pts=30.43,
        ts=1795759262.345,
        track=7,
        action="fall",
        horizon_s=1.0,
        p=0.83,
    )
    assert list(e)[:7] == ["v", "seq", "type", "stream", "frame", "pts", "ts"]
    assert e["ts"] == "2026-11-27T06:01:02.345Z"
    e["seq"] = 1
    ev.validate_event(e)
    assert "\n" not in ev.dumps(e)


def test_event_validation_names_the_problem():
    with pytest.raises(ValueError, match="unknown event type"):
        ev.make_event("nope", "cam1", frame=0, pts=0, ts=0)
    with pytest.raises(ValueError, match=r"lacks fields \['reason'"):
        ev.make_event("stream.offline", "cam1", frame=0, pts=0, ts=0)
    with pytest.raises(ValueError, match="lacks 'seq'"):
        ev.validate_event({"v": 1, "type": "stream.online"})
