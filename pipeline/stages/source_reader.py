"""The reader side of a source stage: :func:`read_items` decodes (files, or cameras through
:class:`stream.sources.ResilientSource`, which reconnects with backoff), :func:`read_into` runs
in the reader thread and fills a :class:`Handoff`, the reader -> sender hand-over of decoded
frames and source statuses (lossless in batch mode, latest-wins in live mode)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from pipeline.config_sections import SourceConfig


class Failure:
    """An exception raised in the reader thread, re-raised by the sender."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Handoff:
    """Reader -> sender hand-over: statuses in order and never dropped; frames by mode.

    ``live``: ``put_frame`` removes any frame not yet taken (counted in ``dropped``) and queues
    the new one. ``batch``: ``put_frame`` waits until the previous frame was taken.
    """

    def __init__(self, live: bool, should_stop: Callable[[], bool]) -> None:
        self.live = live
        self.should_stop = should_stop
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self.closed = False
        self.dropped = 0
        self.frames_in = 0

    def put_frame(self, frame: Any) -> None:
        with self._cond:
            self.frames_in += 1
            if self.live:
                before = len(self._items)
                self._items = deque(i for i in self._items if not is_frame(i))
                self.dropped += before - len(self._items)
            else:
                while any(is_frame(i) for i in self._items) and not self.should_stop():
                    self._cond.wait(0.1)
            self._items.append(frame)
            self._cond.notify_all()

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def take(self, frame_ok: bool, timeout_s: float) -> Any | None:
        """The next status; or the next frame if ``frame_ok``; None after ``timeout_s``."""
        with self._cond:
            deadline = time.monotonic() + timeout_s
            while True:
                if self._items and (frame_ok or not is_frame(self._items[0])):
                    item = self._items.popleft()
                    self._cond.notify_all()
                    return item
                left = deadline - time.monotonic()
                if left <= 0 or (self.closed and not self._items):
                    return None
                self._cond.wait(left)

    def finished(self) -> bool:
        with self._cond:
            return self.closed and not self._items

    def frame_waiting(self) -> bool:
        with self._cond:
            return any(is_frame(i) for i in self._items)


def is_frame(item: Any) -> bool:
    return hasattr(item, "rgb")


def read_items(
    src: SourceConfig,
    *,
    camera: bool,
    live: bool,
    opened: Any,
    open_kwargs: dict[str, Any],
    should_stop: Callable[[], bool],
) -> Iterator[Any]:
    """The source's frames and statuses: a camera's through :class:`ResilientSource`; a
    file's (``opened``; None: refused on open, nothing to read) paced at its rate in live mode
    (or as ``src.realtime`` says), each frame stamped with ``capture_wall``."""
    from stream.sources import Backoff, ResilientSource, SourceStatus

    if camera:
        yield from ResilientSource(
            src.uri,
            should_stop=should_stop,
            open_kwargs={
                "open_timeout_s": src.open_timeout_s,
                "read_timeout_s": src.read_timeout_s,
                **open_kwargs,
            },
            backoff=Backoff(src.reconnect_base_s, src.reconnect_max_s),
            max_attempts=src.reconnect_max_attempts,
            stable_s=src.stable_s,
            min_restart_interval_s=src.min_restart_interval_s,
        )
        return
    source = opened
    if source is None:  # refused on open (too large): no frame, no ring; the stage said why
        return
    pace = live if src.realtime is None else src.realtime
    yield SourceStatus("online", info=source.info, decoder=getattr(source, "decoder", ""))
    start = time.monotonic()
    try:
        for frame in source.frames():
            if pace:  # a recorded input played as a camera would deliver it
                wait = start + frame.pts - time.monotonic()
                if wait > 0:
                    time.sleep(min(wait, 1.0))
            frame.capture_wall = time.time()
            yield frame
            if should_stop():
                return
    finally:
        source.close()
    end = source.end
    yield SourceStatus("end", end.reason if end else "eof", detail=end.detail if end else "")


def read_into(handoff: Handoff, items: Iterator[Any], should_stop: Callable[[], bool]) -> None:
    """The reader thread: every item into ``handoff`` (a failure too, re-raised by the
    sender), then close it."""
    try:
        for item in items:
            if is_frame(item):
                if not hasattr(item, "capture_wall"):
                    item.capture_wall = item.capture_ts
                handoff.put_frame(item)
            else:
                handoff.put(item)
            if should_stop():
                break
    except BaseException as exc:  # noqa: BLE001 - handed to the sender, which re-raises
        handoff.put(Failure(exc))
    finally:
        handoff.close()


def log_pass_end(log: Any, passes: int, end: Any) -> None:
    """Looping file (reader thread): one pass over the file ended; the next one starts."""
    if end.reason == "truncated":
        log.warning(
            "pass %d truncated after %d frames (%s); starting over",
            passes,
            end.frames_read,
            end.detail,
        )
    elif passes == 1:
        log.info(
            "end of the file after %d frames: starting over (pts and frame indexes go on)",
            end.frames_read,
        )
    else:
        log.debug("pass %d ended after %d frames: starting over", passes, end.frames_read)
