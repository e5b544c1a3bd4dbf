"""Streams added, removed and listed at runtime: the supervisor's side of the control
endpoint (:mod:`pipeline.control`), as :class:`StreamControl`, a part of the supervisor's run.

An ``add`` is checked (allowed source, size, stream limits), then its source is probed in a
thread (:class:`pipeline.control.Deferred`); the answer comes once the probe is done.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.logs import stream_logger

log = logging.getLogger("pipeline.graph.supervisor")


class StreamControl:
    """The ``add``/``remove``/``list`` handler; mixed into the supervisor's run, whose
    ``cfg``, ``stop``, ``source_stops``, ``source_uris``, ``states``, ``started_streams``,
    ``_sources_running`` and ``_start_source`` it uses."""

    def handle(self, req: dict[str, Any]) -> dict[str, Any] | Any:
        """Answer one control request (see :mod:`pipeline.control`); an ``add`` answers later,
        once its source probe (in a thread) is done."""
        from stream.redact import redact
        op = req.get("op")
        if op == "list":
            running = set(self._sources_running())
            streams = [
                {
                    "stream_id": sid,
                    "uri": redact(self.source_uris[sid]),
                    "state": self.states.get(sid, "connecting"),
                    "running": sid in running,
                }
                for sid in self.source_stops
            ]
            return {"ok": True, "streams": streams}
        if op == "remove":
            sid = req.get("stream_id")
            if not isinstance(sid, str) or sid not in self._sources_running():
                return {"ok": False, "error": f"no running stream {short_repr(sid)}"}
            self.source_stops[sid].set()
            return {"ok": True, "stream_id": sid}
        if op == "add":
            return self._add(req)
        return {"ok": False, "error": f"unknown op {short_repr(op)}: expected add, remove or list"}

    def _add(self, req: dict[str, Any]) -> dict[str, Any] | Any:
        import re

        from pydantic import ValidationError

        from pipeline.config_sections import SourceConfig
        from pipeline.control import MAX_URI_CHARS, Deferred, source_allowed
        from stream.redact import redact
        from stream.sources import is_live_uri, probe_source
        rt = self.cfg.runtime
        if self.stop.is_set():
            return {"ok": False, "error": "vigil is stopping"}
        uri = req.get("uri")
        if not isinstance(uri, str) or not uri:
            return {"ok": False, "error": "uri: a non-empty string is required"}
        if len(uri) > MAX_URI_CHARS:
            return {"ok": False, "error": f"uri: longer than {MAX_URI_CHARS} characters"}
        if not source_allowed(uri, rt.allowed_sources):
            # The same words whether or not the path exists: a peer learns nothing from it.
            return {"ok": False, "error": "uri: not allowed by runtime.allowed_sources"}
        fields = {k: v for k, v in req.items() if k != "op"}
        fields.setdefault("stream_id", f"cam{len(self.started_streams) + 1}")
        try:
            src = SourceConfig.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
            return {"ok": False, "error": f"{loc}: {msg}"[:300]}
        # Attempts are at least min_restart_interval_s apart whatever the backoff says, so its
        # floor bounds the reconnect events any request can cause.
        if src.min_restart_interval_s < rt.control_min_retry_s:
            floor = rt.control_min_retry_s
            why = f"min_restart_interval_s: at least {floor:g} s (runtime.control_min_retry_s)"
            return {"ok": False, "error": why}
        sid = src.stream_id
        if sid in self._sources_running():
            return {"ok": False, "error": f"stream {sid!r} is already running"}
        if len(self._sources_running()) >= rt.max_streams:  # running ones: a remove frees one
            return {"ok": False, "error": f"runtime.max_streams ({rt.max_streams}) reached"}
        live = is_live_uri(src.uri)

        def finish(result: Any) -> dict[str, Any]:
            if isinstance(result, BaseException):
                if getattr(result, "reason", None) == "too_large":  # as on the command line
                    # The size and the cap, not the path: a peer learns no more of the disk.
                    sizes = re.findall(r"frames of (\d+x\d+) ", str(result))  # last: not the path
                    frames = f"frames of {sizes[-1]}" if sizes else "frames"
                    cap = f"max_pixels ({src.max_pixels:,} pixels)"
                    return {"ok": False, "error": f"uri: {frames} exceed {cap}; refused"}
                if live:
                    return {"ok": False, "error": str(result)[:300]}
                log.info("control add refused: %s: %s", redact(src.uri), result)
                return {"ok": False, "error": "uri: cannot be opened as a video source"}
            if self.stop.is_set():
                return {"ok": False, "error": "vigil is stopping"}
            if sid in self._sources_running():
                return {"ok": False, "error": f"stream {sid!r} is already running"}
            if len(self._sources_running()) >= rt.max_streams:
                return {"ok": False, "error": f"runtime.max_streams ({rt.max_streams}) reached"}
            self._start_source(src.model_dump(mode="json"))
            stream_logger(log, sid).info("added: %s", redact(src.uri))
            return {"ok": True, "stream_id": sid}

        if Deferred.busy():  # probes that timed out and still hang hold their threads
            return {"ok": False, "error": "too many source probes still running; try later"}
        timeout = rt.probe_timeout_s
        late = {"ok": False, "error": f"uri: no answer from the source in {timeout:g} s"}
        return Deferred(
            lambda: probe_source(src.uri, max_pixels=src.max_pixels),  # the request's cap
            finish,
            timeout_s=timeout,
            timeout_reply=late,
        )


def short_repr(value: Any) -> str:
    """A peer's value for an error message, at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
