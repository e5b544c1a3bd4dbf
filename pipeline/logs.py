"""Logging for every vigil process: human-readable lines or JSON, credentials always hidden.

:func:`setup_logging` is called once per process: by the CLI (``vigil``) and by every worker
process (:func:`pipeline.stages.init_child_process`, named after its stage: ``infer``,
``source:cam1``, ...).

- **Human** (default): ``2026-11-27 06:01:02,345 source:cam1 INFO stream cam1: online ...``:
  time, process (stage) name, level, message.
- **JSON** (``vigil --log-json``, or ``VIGIL_LOG_JSON=1``): one object per line on stderr, with
  ``ts`` (ISO 8601 UTC, milliseconds), ``level`` (``debug`` ... ``critical``), ``logger``,
  ``process`` (the stage name, ``vigil`` for the main process), ``pid``, ``message``,
  ``stream`` (the stream id, when the line is about one stream) and ``exc_info`` (the
  traceback text, when there is one). Python warnings are routed through logging too, so they
  come out as JSON lines as well.

Worker processes are started with multiprocessing *spawn*, so they do not inherit the parent's
logging set-up: the parent exports its choice in the environment (:data:`LOG_JSON_ENV`) and the
workers read it back (``json_logs=None``).

Every line is redacted before it is written (:class:`RedactFilter`): the userinfo of any URI
in the message, its arguments or its traceback (``rtsp://user:pw@host/x``) becomes ``***``
(``rtsp://***@host/x``), and so do credential-like query parameters (``?password=***``) and
credential headers (``Authorization: ***``): the one implementation :mod:`stream.redact`, which
:func:`stream.sources.redact_uri` uses for events too.

Lines about one stream name it: log them through :func:`stream_logger`, which prefixes the
message with ``stream ID:`` and sets the record's ``stream`` (the JSON field). In a source
stage's process (``source:ID``), every record's ``stream`` defaults to that stream.

Standard library only: this module is imported before anything heavy.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import IO, Any

from stream.redact import redact

LOG_JSON_ENV = "VIGIL_LOG_JSON"

_TRUE = {"1", "true", "yes", "on"}


def json_logs_from_env() -> bool:
    """Whether :data:`LOG_JSON_ENV` asks for JSON logs (``1``, ``true``, ``yes``, ``on``)."""
    return os.environ.get(LOG_JSON_ENV, "").strip().lower() in _TRUE


class RedactFilter(logging.Filter):
    """Hide URI credentials in a record's message, arguments and traceback text.

    The message is rendered once (``msg % args``) and redacted, and ``args`` emptied, so no
    handler or formatter can print an argument unredacted; the traceback is rendered into
    ``exc_text`` (which formatters print instead of rendering ``exc_info`` again) and redacted.
    """

    _tracebacks = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: logging reports it itself
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._tracebacks.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _iso_utc(created: float) -> str:
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _stream_of(process: str) -> str | None:
    """A source stage's process (``source:ID``) is about stream ``ID``."""
    if not process.startswith("source:"):
        return None
    return process.split(":", 1)[1] or None


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for the fields)."""

    def __init__(self, process: str = "vigil") -> None:
        super().__init__()
        self.process = process
        self.default_stream = _stream_of(process)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "process": self.process,
            "pid": record.process,
            "message": record.getMessage(),
        }
        stream = getattr(record, "stream", None) or self.default_stream
        if stream:
            line["stream"] = str(stream)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def human_formatter(process: str = "vigil") -> logging.Formatter:
    """Time, process (stage) name, level, message: the format vigil always had."""
    name = process.replace("%", "%%")
    return logging.Formatter(f"%(asctime)s {name} %(levelname)s %(message)s")


def make_handler(
    json_logs: bool, process: str = "vigil", stream: IO[str] | None = None
) -> logging.Handler:
    """A handler writing to ``stream`` (default stderr) in the chosen format, with redaction."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(process) if json_logs else human_formatter(process))
    handler.addFilter(RedactFilter())
    handler._vigil = True  # type: ignore[attr-defined]  # ours: replaced on the next set-up
    return handler


def parse_level(level: int | str) -> int:
    """``logging.INFO`` or ``"info"`` -> 20; ValueError naming an unknown level."""
    if isinstance(level, int):
        return level
    value = logging.getLevelName(str(level).upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r} (debug, info, warning, error, critical)")
    return value


def setup_logging(
    level: int | str, json_logs: bool | None, process: str = "vigil", *, force: bool = False
) -> logging.Handler | None:
    """Send this process's logs to stderr, human-readable or as JSON, credentials redacted.

    ``json_logs`` None reads :data:`LOG_JSON_ENV` (worker processes); the choice is written back
    to the environment so that processes spawned later make the same one. Calling it again
    replaces the handler it installed before. Like ``logging.basicConfig``, it leaves a root
    logger that someone else already gave handlers (an embedding application, pytest) alone,
    unless ``force``. Returns the handler installed, or None.
    """
    level = parse_level(level)
    if json_logs is None:
        json_logs = json_logs_from_env()
    os.environ[LOG_JSON_ENV] = "1" if json_logs else "0"
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_vigil", False)]:
        root.removeHandler(old)
        old.close()
    if root.handlers and not force:
        return None
    handler = make_handler(json_logs, process)
    root.addHandler(handler)
    root.setLevel(level)
    if json_logs:  # warnings.warn(...) would print plain text lines on stderr
        logging.captureWarnings(True)
    return handler


def say(text: str, level: int = logging.INFO, prefix: str = "vigil") -> None:
    """A line for the person at the terminal (a run's summary, an error): ``PREFIX: text`` on
    stderr, credentials redacted; with JSON logs, a record of logger ``PREFIX`` instead, so that
    stderr stays one JSON object per line (whatever ``--log-level``: text mode prints it too)."""
    if json_logs_from_env():
        logger = logging.getLogger(prefix.replace(" ", "."))
        logger.handle(logger.makeRecord(logger.name, level, "(vigil)", 0, text, (), None))
    else:
        print(f"{prefix}: {redact(text)}", file=sys.stderr, flush=True)


class StreamLogger(logging.LoggerAdapter):
    """Log lines about one stream: ``stream ID: message``, with the record's ``stream`` set."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        stream = self.extra["stream"] if self.extra else None
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "stream": stream}
        return f"stream {str(stream).replace('%', '%%')}: {msg}", kwargs


def stream_logger(logger: logging.Logger, stream_id: str) -> StreamLogger:
    """``logger``, for lines about stream ``stream_id`` (see :class:`StreamLogger`)."""
    return StreamLogger(logger, {"stream": stream_id})
