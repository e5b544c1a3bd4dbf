from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import zmq

from stream.sinks import EventPublisher, JpegFrameFeed, VideoFileSink
from stream.transport import FrameRing, RingReader


def test_video_sink_keeps_pts_and_writes_atomically(tmp_path: Path):
    out = tmp_path / "a.mp4"
    sink = VideoFileSink(out, width=64, height=48, fps=12.5, time_base=Fraction(1, 1000))
    pts = [0, 80, 160, 240, 400]  # ms, with a gap
    for p in pts:
        sink.write(np.zeros((48, 64, 3), np.uint8), p)
    assert not out.exists()  # only the hidden partial file exists until close
    sink.close()
    with av.open(str(out)) as c:
        got = [round(float(f.pts * f.time_base), 3) for f in c.decode(video=0)]
    assert got == [p / 1000 for p in pts]
    assert not list(tmp_path.glob(".*partial*"))


def test_event_publisher_numbers_gap_free_and_records_before_publishing(tmp_path: Path, free_port):
    ctx = zmq.Context()
    endpoint = f"tcp://127.0.0.1:{free_port}"
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    pub = EventPublisher(
        jsonl_path=tmp_path / "e.jsonl",
        ctx=ctx,
        endpoint=endpoint,
        first_seq=41,
        wait_subscribers=1,
        wait_timeout_s=5,
    )
    for i in range(3):
        pub.publish({"v": 1, "seq": None, "type": "frame.dropped", "count": i, "total": i})
    pub.close()
    lines = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [e["seq"] for e in lines] == [41, 42, 43]
    got = [json.loads(sub.recv_multipart()[1]) for _ in range(3)]
    assert got == lines
    sub.close()
    ctx.term()


def test_jpeg_feed_is_latest_wins_and_counts_drops(free_port):
    ctx = zmq.Context()
    feed = JpegFrameFeed(ctx, f"tcp://127.0.0.1:{free_port}")
    for _ in range(5):  # no subscriber: PUB drops silently, the feed still never blocks
        feed.send("cam1", np.zeros((8, 8, 3), np.uint8), {"frame": 0})
    assert feed.sent + feed.dropped == 5
    feed.close()
    ctx.term()


def test_frame_ring_shares_pixels_between_owner_and_reader():
    ring = FrameRing.create(slots=3, slot_bytes=4 * 5 * 3)
    frame = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    ring.write(2, frame)
    reader = RingReader()
    view = reader.view(ring.address(2, frame.shape))
    np.testing.assert_array_equal(view, frame)
    with pytest.raises(ValueError, match="does not fit"):
        ring.view(0, (10, 10, 3))
    with pytest.raises(IndexError):
        ring.view(3, (1,))
    del view
    reader.close()
    ring.close()
