"""Unit tests of the event bookkeeping that survives stage restarts
(:mod:`pipeline.stages.publish_state`): OpenTracks, SentEvents and EventGate."""

from __future__ import annotations


def test_open_tracks_ledger_ends_what_a_dead_tracker_left_open() -> None:
    from models.results import Detections, FrameResult
    from pipeline.stages.publish_state import OpenTracks
    from stream import events as ev

    def start(sid: str, tid: int, pts: float) -> dict:
        return ev.make_event(
            "track.start", sid, frame=0, pts=pts, ts=0.0, track=tid, label="person"
        )

    def frame(sid: str, idx: int, ids: list[int]) -> FrameResult:
        box = [[0, 0, 10, 20]] * len(ids)
        det = Detections(box, [0.9] * len(ids), [0] * len(ids), ids)
        return FrameResult(sid, idx, idx / 10, 100.0 + idx / 10, 64, 48, det)

    ledger = OpenTracks()
    for e in (start("a", 1, 0.0), start("a", 2, 0.1), start("b", 1, 0.0)):
        ledger.event(e)
    for i in range(5):
        ledger.frame(frame("a", i, [1, 2, -1] if i < 3 else [1]))
    ledger.event(ev.make_event(
        "track.end", "a", frame=3, pts=0.3, ts=0.0, track=2, label="person", frames=3,
        duration_s=0.2,
    ))  # fmt: skip
    ledger.event(ev.make_event(
        "stream.offline", "b", frame=9, pts=0.9, ts=0.0, reason="eof", frames_read=10
    ))  # its tracks were ended by its analytics already  # fmt: skip
    assert not ledger.stale(start("a", 1, 0.5), gen=0)
    (end,) = ledger.end_all("restart", gen=1)
    assert ledger.stale(start("a", 1, 0.5), gen=0)  # from the dead tracker, after its end
    assert not ledger.stale(start("a", 1, 0.5), gen=1) and not ledger.stale(start("a", 1, 0), None)
    assert (end["type"], end["stream"], end["track"], end["reason"]) == (
        "track.end",
        "a",
        1,
        "restart",
    )
    assert (end["frame"], end["pts"], end["frames"], end["duration_s"]) == (4, 0.4, 5, 0.4)
    assert len(ledger) == 0 and ledger.end_all("restart") == []


def test_events_a_dead_publish_stage_never_journaled_are_sent_again_once_each() -> None:
    from pipeline.stages.publish_state import EventGate, SentEvents

    sent = SentEvents(gen=0, capacity=5)
    ids = [sent.number({"n": i}) for i in range(1, 8)]  # 1..7; 1 and 2 evicted
    assert ids[0] == [0, 1] and ids[-1] == [0, 7]
    events, lost = sent.after([0, 4])  # 1..4 journaled: 5..7 again, nothing lost
    assert [eid for eid, _ in events] == [[0, 5], [0, 6], [0, 7]] and lost == 0
    events, lost = sent.after([0, 1])  # 2 was evicted already: lost, and said so
    assert [eid[1] for eid, _ in events] == [3, 4, 5, 6, 7] and lost == 1
    assert sent.after(None)[1] == 2  # nothing journaled: 1 and 2 are gone
    assert [e[1] for e, _ in SentEvents(gen=1).after([0, 9])[0]] == []  # a new analytics process

    # The restarted publish stage journaled up to 4; 6 and 7 still came through the old pipe
    # before the resend (5, 6, 7) and then 8: 5..8 once each, in order.
    gate = EventGate([0, 4], holding=True)
    for n in (6, 7, 5, 6, 7):
        assert gate.offer([0, n], {"n": n}) == []
    assert [eid for eid, _ in gate.release()] == [[0, 5], [0, 6], [0, 7]]
    assert gate.offer([0, 7], {"n": 7}) == []  # a late duplicate
    assert gate.offer([0, 8], {"n": 8}) == [([0, 8], {"n": 8})]
    assert gate.offer([1, 1], {"n": 1}) == [([1, 1], {"n": 1})]  # a restarted analytics stage
    assert gate.offer([0, 9], {"n": 9}) == [([0, 9], {"n": 9})]  # its predecessor's last one
    assert gate.offer([1, 1], {"n": 1}) == [] and gate.offer([1, 2], {}) != []
    assert EventGate(None, holding=False).offer([0, 1], {}) == [([0, 1], {})]

    # No answer in time: 7 (through the old pipe) is released; 5 and 6, resent late, still
    # count, once.
    late = EventGate([0, 4], holding=True)
    late.offer([0, 7], {"n": 7})
    assert [eid for eid, _ in late.release()] == [[0, 7]]
    assert [late.offer([0, n], {}) != [] for n in (5, 6, 6, 7, 8)] == [
        True,
        True,
        False,
        False,
        True,
    ]
