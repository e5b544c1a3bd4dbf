"""The ``vigil`` command line.

    vigil demo                       offline demo on the synthetic sample video
    vigil process INPUT --out DIR    one video file -> annotated.mp4 + events.jsonl (+ ZeroMQ)
    vigil run CONFIG                 run a YAML config (flags override it)
    vigil subscribe ENDPOINT         print events from a running vigil as JSON lines
    vigil replay JOURNAL             print the events kept in an event journal
    vigil models list                the weights registry and what is cached

Bad input (a missing or non-video file, an unknown config key, a bad endpoint) exits with
status 2 and one line on stderr; a failed stage exits 1 with the stage's traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline import commands
from pipeline.commands import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UserError
from pipeline.logs import say, setup_logging

#: One flag of a subcommand: its name(s), then ``add_argument``'s keyword arguments.
Flag = tuple[str | tuple[str, ...], dict[str, Any]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_json or None)
    quiet_ffmpeg(args.log_level)
    try:
        return int(args.func(args) or EXIT_OK)
    except UserError as exc:
        say(f"error: {exc}", logging.ERROR)
        return EXIT_USAGE
    except KeyboardInterrupt:
        say("interrupted", logging.WARNING)
        return EXIT_INTERRUPTED


def quiet_ffmpeg(log_level: str) -> None:
    """FFmpeg's own log lines (via PyAV) duplicate our one-line errors; show them in debug only."""
    if log_level != "debug":
        logging.getLogger("libav").setLevel(logging.CRITICAL)


def add_flags(parser: argparse.ArgumentParser, flags: Sequence[Flag]) -> None:
    """Add ``flags`` (see :data:`Flag`) to ``parser``, in order."""
    for names, kwargs in flags:
        parser.add_argument(*((names,) if isinstance(names, str) else names), **kwargs)


def _opt(text: str, **kwargs: Any) -> dict[str, Any]:
    return {"help": text, **kwargs}


def _switch(text: str) -> dict[str, Any]:
    return {"action": "store_true", "help": text}


_OVERWRITE = _switch(
    "delete a previous run's outputs in --out (default: move them to OUT/previous/N/)"
)
_NO_PROGRESS = _switch("no progress bar")

#: The flags of ``process`` and ``run``: each one overrides a config key (see
#: ``_overrides`` in :mod:`pipeline.commands`).
RUN_FLAGS: list[Flag] = [
    ("--out", _opt("output folder (default: config's output.dir)", type=Path)),
    ("--stream-id", _opt("stream name used in events (default: cam1)")),
    ("--events", _opt("publish events on this ZeroMQ PUB endpoint, e.g. tcp://127.0.0.1:5555")),
    ("--frames", _opt("publish annotated JPEG frames on this ZeroMQ endpoint")),
    ("--replay", _opt(
        "serve replay/snapshot requests on this ZeroMQ endpoint, e.g. tcp://127.0.0.1:5556")),
    ("--journal", _opt("event journal file (default: OUT/events.journal.sqlite)")),
    ("--no-journal", _switch("keep no event journal")),
    ("--wait-subscribers", _opt(
        "before publishing, wait (up to 10 s) for this many event subscribers", type=int)),
    ("--model", _opt(
        "detector name (see `vigil models list`; default auto: the light one on a CPU, "
        "the stronger one on CUDA)")),
    ("--weights", _opt(
        "auto (default: cached, else downloaded on first use) | pretrained | none "
        "(random weights) | PATH to weights")),
    ("--score-threshold", _opt("minimum detection score, 0-1", type=float)),
    ("--iou-threshold", _opt("NMS IoU threshold, 0-1", type=float)),
    ("--classes", _opt("comma-separated class names to keep, e.g. person,car")),
    ("--device", _opt("auto | cpu | cuda | cuda:N")),
    ("--no-video", _switch("do not write annotated.mp4")),
    ("--no-progress", _NO_PROGRESS),
    ("--mode", _opt(
        "batch: every frame; live: latest frame wins (auto: live for cameras)",
        choices=["auto", "batch", "live"])),
    ("--duration", _opt("stop after this many seconds (exit 0)", type=float)),
    ("--control", _opt("serve `vigil streams` requests on this ZeroMQ endpoint")),
    ("--http", _opt(
        "serve the live viewer (/), Prometheus metrics (/metrics), /healthz and /readyz "
        "on this address (HOST defaults to 127.0.0.1; off by default)", metavar="[HOST:]PORT")),
    ("--loop", _switch(
        "files: start over at the end, forever (a stand-in camera; stop with Ctrl-C or "
        "--duration)")),
    ("--overwrite", _OVERWRITE),
    ("--insecure", _switch(
        "allow --http beyond loopback without runtime.http_token_file, and ZeroMQ "
        "endpoints beyond loopback without publish.curve_secret_key_file (logs a warning)")),
]  # fmt: skip

PROCESS_FLAGS: list[Flag] = [
    ("input", _opt(
        "video file(s), folder(s) (recursive, by video extension), glob(s) or @list.txt "
        "(one per line)", nargs="+")),
    ("--config", _opt("YAML config to start from (default: built-in)", type=Path)),
    *RUN_FLAGS,
    ("--workers", _opt(
        "archive: files processed at once (worker processes or Ray actors; default 1)",
        type=int)),
    ("--engine", _opt(
        "archive: local worker processes (default) or Ray actors (pip install 'vigil[ray]')",
        choices=["local", "ray"])),
    ("--ray-address", _opt("archive: Ray cluster to join (default: start a local Ray)")),
]  # fmt: skip

DEMO_FLAGS: list[Flag] = [
    ("--out", _opt("output folder", type=Path, default=Path("out/demo"))),
    ("--events", _opt("also publish events on this ZeroMQ endpoint")),
    ("--frames", _opt("also publish annotated JPEG frames on this endpoint")),
    ("--no-progress", _NO_PROGRESS),
    ("--overwrite", _OVERWRITE),
    ("--model", _opt(
        "detector (default: the config's, or simnet when its pretrained weights are not "
        "cached)")),
]  # fmt: skip

SUBSCRIBE_FLAGS: list[Flag] = [
    ("endpoint", _opt("e.g. tcp://127.0.0.1:5555")),
    ("--replay", _opt(
        "the publisher's replay endpoint: resume without loss, e.g. tcp://127.0.0.1:5556")),
    ("--from-seq", _opt(
        "print events after this seq (needs --replay; default: open state, then live)",
        type=int, default=None)),
    ("--server-key", _opt("the publisher's CURVE public certificate file")),
    ("--client-key", _opt("this client's CURVE secret certificate file")),
    ("--type", _opt(
        "only this event type (prefix match, repeatable), e.g. --type track.",
        action="append", default=[])),
    ("--stream", _opt("only events of this stream id")),
    ("--count", _opt("exit after this many events", type=int)),
    ("--timeout", _opt("exit after this many seconds without an event", type=float)),
]  # fmt: skip

REPLAY_FLAGS: list[Flag] = [
    ("journal", _opt("journal file, e.g. out/events.journal.sqlite", type=Path)),
    ("--from-seq", _opt("print events after this seq", type=int, default=0)),
    ("--type", _opt(
        "only this event type (prefix, repeatable)", action="append", default=[])),
    ("--count", _opt("print at most this many events", type=int)),
]  # fmt: skip

MODELS_FLAGS: list[Flag] = [
    ("action", _opt("list the registry, or fetch NAME", choices=["list", "fetch"])),
    ("name", _opt("model to fetch", nargs="?")),
]

STREAMS_FLAGS: list[Flag] = [
    ("action", _opt("what to do", choices=["add", "remove", "list"])),
    ("uri", _opt("add: the stream's URI (camera, file, image folder)", nargs="?")),
    ("--control", _opt("the control endpoint, e.g. tcp://127.0.0.1:5560", required=True)),
    ("--stream-id", _opt("add/remove: the stream id")),
    ("--timeout", _opt("seconds to wait for the reply", type=float, default=5.0)),
    ("--server-key", _opt("CURVE: the public certificate of vigil's server key")),
    ("--client-key", _opt(
        "CURVE: this client's secret certificate (with curve_clients_dir)")),
]  # fmt: skip

#: The subcommands, in ``--help`` order: name, ``add_parser`` keywords, flags, handler.
COMMANDS: list[tuple[str, dict[str, Any], list[Flag], Callable[[argparse.Namespace], int]]] = [
    ("process", {
        "help": "process a video file, or a batch archive of many",
        "description": "Process one video file: detect objects in every frame, "
        "write DIR/annotated.mp4 and DIR/events.jsonl, and optionally publish "
        "events and annotated frames over ZeroMQ.\n\n"
        "Several INPUTs (or a folder, glob or @list.txt) make a batch archive: each video "
        "goes to its own folder DIR/NAME/ and DIR/manifest.jsonl gets one line per input "
        "(status done | failed | skipped, frames, duration_s, events, error, output, size, "
        "mtime_ns). Re-running the same command skips inputs already done with the same size "
        "and mtime and retries failed ones.",
        "epilog": "exit status: 0 all inputs done (or skipped); 1 a stage failed, or (archive) "
        "at least one input failed (see DIR/manifest.jsonl); 2 bad usage, config or input "
        "(one file), or --engine ray without Ray; 130 interrupted (archive: rerun to resume).",
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }, PROCESS_FLAGS, commands.cmd_process),
    ("run", {
        "help": "run a YAML config",
        "description": "Run the pipeline described by a YAML config "
        "(see configs/). Flags override the file.",
    }, [("config", _opt("YAML config file", type=Path)), *RUN_FLAGS], commands.cmd_run),
    ("demo", {
        "help": "offline demo on a synthetic sample video",
        "description": "Make the synthetic sample video (once, cached) and run "
        "configs/demo.yaml on it; outputs go to --out (default out/demo).",
    }, DEMO_FLAGS, commands.cmd_demo),
    ("subscribe", {
        "help": "print events from a running vigil",
        "description": "Connect to a vigil event endpoint and print each event as "
        "one JSON line on stdout.",
    }, SUBSCRIBE_FLAGS, commands.cmd_subscribe),
    ("replay", {
        "help": "print events from an event journal",
        "description": "Read an event journal (vigil's events.journal.sqlite) offline and print "
        "its events as JSON lines, in seq order.",
    }, REPLAY_FLAGS, commands.cmd_replay),
    ("models", {
        "help": "the weights registry",
        "description": "List registered models and whether their weights are "
        "cached, or download one (checksum verified) into the cache.",
    }, MODELS_FLAGS, commands.cmd_models),
    ("streams", {
        "help": "add, remove or list the streams of a running vigil",
        "description": "Talk to a running vigil's control endpoint (runtime.control / "
        "--control): add a stream, remove one, or list them with their state. Prints the JSON "
        "reply.",
    }, STREAMS_FLAGS, commands.cmd_streams),
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `vigil COMMAND --help` for a command's options. Docs: README.md.",
    )
    add_flags(parser, [
        ("--log-level", _opt(
            "log verbosity", default="warning", choices=["debug", "info", "warning", "error"])),
        ("--log-json", _switch(
            "structured logs: one JSON object per line on stderr (default: human-readable)")),
    ])  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, kwargs, flags, func in COMMANDS:
        p = sub.add_parser(name, **kwargs)
        add_flags(p, flags)
        p.set_defaults(func=func)
    return parser


if __name__ == "__main__":
    sys.exit(main())
