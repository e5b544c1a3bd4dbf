"""The ``vigil`` command line.

    vigil demo                       offline demo on the synthetic sample video
    vigil process INPUT --out DIR    one video file -> annotated.mp4 + events.jsonl (+ ZeroMQ)
    vigil run CONFIG                 run a YAML config (flags override it)
    vigil subscribe ENDPOINT         print events from a running vigil as JSON lines
    vigil models list                the weights registry and what is cached

Bad input (a missing or non-video file, an unknown config key, a bad endpoint) exits with
status 2 and one line on stderr; a failed stage exits 1 with the stage's traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"

log = logging.getLogger("vigil")


class UserError(Exception):
    """Bad input or set-up: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    quiet_ffmpeg(args.log_level)
    try:
        return int(args.func(args) or EXIT_OK)
    except UserError as exc:
        print(f"vigil: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("vigil: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def quiet_ffmpeg(log_level: str) -> None:
    """FFmpeg's own log lines (via PyAV) duplicate our one-line errors; show them in debug only."""
    if log_level != "debug":
        logging.getLogger("libav").setLevel(logging.CRITICAL)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `vigil COMMAND --help` for a command's options. Docs: README.md.",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "process",
        help="process one video file",
        description="Process one video file: detect objects in every frame, "
        "write DIR/annotated.mp4 and DIR/events.jsonl, and optionally publish "
        "events and annotated frames over ZeroMQ.",
    )
    p.add_argument("input", help="video file (any container/codec FFmpeg reads)")
    p.add_argument("--config", type=Path, help="YAML config to start from (default: built-in)")
    _add_run_flags(p)
    p.set_defaults(func=cmd_process)

    r = sub.add_parser(
        "run",
        help="run a YAML config",
        description="Run the pipeline described by a YAML config "
        "(see configs/). Flags override the file.",
    )
    r.add_argument("config", type=Path, help="YAML config file")
    _add_run_flags(r)
    r.set_defaults(func=cmd_run)

    d = sub.add_parser(
        "demo",
        help="offline demo on a synthetic sample video",
        description="Make the synthetic sample video (once, cached) and run "
        "configs/demo.yaml on it; outputs go to --out (default out/demo).",
    )
    d.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder")
    d.add_argument("--events", help="also publish events on this ZeroMQ endpoint")
    d.add_argument("--frames", help="also publish annotated JPEG frames on this endpoint")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser(
        "subscribe",
        help="print events from a running vigil",
        description="Connect to a vigil event endpoint and print each event as "
        "one JSON line on stdout.",
    )
    s.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5555")
    s.add_argument(
        "--type",
        action="append",
        default=[],
        help="only this event type (prefix match, repeatable), e.g. --type track.",
    )
    s.add_argument("--stream", help="only events of this stream id")
    s.add_argument("--count", type=int, help="exit after this many events")
    s.add_argument("--timeout", type=float, help="exit after this many seconds without an event")
    s.set_defaults(func=cmd_subscribe)

    m = sub.add_parser(
        "models",
        help="the weights registry",
        description="List registered models and whether their weights are "
        "cached, or download one (checksum verified) into the cache.",
    )
    m.add_argument("action", choices=["list", "fetch"], help="list the registry, or fetch NAME")
    m.add_argument("name", nargs="?", help="model to fetch")
    m.set_defaults(func=cmd_models)
    return parser


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="output folder (default: config's output.dir)")
    p.add_argument("--stream-id", help="stream name used in events (default: cam1)")
    p.add_argument(
        "--events", help="publish events on this ZeroMQ PUB endpoint, e.g. tcp://127.0.0.1:5555"
    )
    p.add_argument("--frames", help="publish annotated JPEG frames on this ZeroMQ endpoint")
    p.add_argument(
        "--wait-subscribers",
        type=int,
        help="before publishing, wait (up to 10 s) for this many event subscribers",
    )
    p.add_argument("--model", help="detector name (see `vigil models list`)")
    p.add_argument("--weights", help="auto | pretrained | none | PATH to weights")
    p.add_argument("--score-threshold", type=float, help="minimum detection score, 0-1")
    p.add_argument("--iou-threshold", type=float, help="NMS IoU threshold, 0-1")
    p.add_argument("--classes", help="comma-separated class names to keep, e.g. person,car")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-video", action="store_true", help="do not write annotated.mp4")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    g = lambda name: getattr(args, name, None)  # noqa: E731
    return {
        "output.dir": str(g("out")) if g("out") else None,
        "publish.events": g("events"),
        "publish.frames": g("frames"),
        "publish.wait_subscribers": g("wait_subscribers"),
        "detect.model": g("model"),
        "detect.weights": g("weights"),
        "detect.score_threshold": g("score_threshold"),
        "detect.iou_threshold": g("iou_threshold"),
        "detect.classes": g("classes").split(",") if g("classes") else None,
        "detect.device": g("device"),
        "output.video": False if g("no_video") else None,
        "runtime.progress": False if g("no_progress") else None,
    }


def _load(config: Path | None, args: argparse.Namespace, input_uri: str | None = None) -> Any:
    from pipeline.config import ConfigError, load_config

    overrides = _overrides(args)
    if input_uri is not None:
        overrides["sources"] = [{"uri": input_uri, "stream_id": args.stream_id or "cam1"}]
    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        raise UserError(str(exc)) from None
    if getattr(args, "stream_id", None) and input_uri is None:
        for src in cfg.sources:
            src.stream_id = args.stream_id
    return cfg


def cmd_process(args: argparse.Namespace) -> int:
    return _execute(_load(args.config, args, input_uri=args.input))


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(_load(args.config, args))


def cmd_demo(args: argparse.Namespace) -> int:
    from models.weights import cache_dir
    from stream.synthetic import demo_sample

    video, gt = demo_sample(cache_dir() / "sample")
    print(f"vigil demo: synthetic sample video {video} (ground truth {gt})", file=sys.stderr)
    args.config = DEMO_CONFIG
    args.stream_id = "demo"
    return cmd_process(argparse.Namespace(**{**vars(args), "input": str(video)}))


def _execute(cfg: Any) -> int:
    from pipeline.supervisor import StageFailed, run_pipeline
    from stream.sources import SourceError, open_source

    if not cfg.sources:
        raise UserError("no sources: give an INPUT, or list sources in the config")
    from models.perception import check_model
    from models.weights import WeightsError

    try:
        check_model(cfg.detect.model)
    except WeightsError as exc:
        raise UserError(str(exc)) from None
    totals = 0
    for src in cfg.sources:  # fail fast, in this process, on inputs that cannot be opened
        try:
            source = open_source(src.uri)
        except SourceError as exc:
            raise UserError(str(exc)) from None
        totals += source.info.frame_count or 0
        source.close()
    try:
        summary = run_pipeline(cfg, progress_total=totals or None)
    except StageFailed as exc:
        if exc.user:
            raise UserError(exc.message.split(": ", 1)[-1]) from None
        print(f"vigil: error: {exc}\n{exc.traceback}", file=sys.stderr, end="")
        return EXIT_FAILED
    out = cfg.output.dir
    print(
        f"vigil: {summary.frames} frames in {summary.seconds:.1f} s "
        f"({summary.fps:.1f} frames/s), {summary.events} events",
        file=sys.stderr,
    )
    if summary.detector:
        print(f"vigil: detector {summary.detector}", file=sys.stderr)
    for sid, end in summary.streams.items():
        if end["reason"] == "truncated":
            print(
                f"vigil: warning: stream {sid} truncated: read {end['frames_read']} frames "
                f"before the break ({end['detail']}); all of them processed",
                file=sys.stderr,
            )
    written = [p for p in (out / "annotated.mp4", out / "events.jsonl") if p.exists()]
    if written:
        print("vigil: wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    if summary.interrupted:
        print("vigil: stopped on request; every frame read was processed", file=sys.stderr)
    return EXIT_OK


def cmd_subscribe(args: argparse.Namespace) -> int:
    import zmq

    from pipeline.config import check_endpoint

    try:
        check_endpoint(args.endpoint)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    for t in args.type or [""]:
        sock.setsockopt(zmq.SUBSCRIBE, t.encode())
    sock.connect(args.endpoint)
    seen = 0
    try:
        while args.count is None or seen < args.count:
            timeout_ms = int(args.timeout * 1000) if args.timeout else None
            if not sock.poll(timeout_ms):
                break
            _topic, payload = sock.recv_multipart()
            event = json.loads(payload)
            if args.stream and event.get("stream") != args.stream:
                continue
            print(payload.decode(), flush=True)
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        ctx.term()
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from models import weights

    if args.action == "fetch":
        if not args.name:
            raise UserError("vigil models fetch needs a model NAME (see `vigil models list`)")
        try:
            path = weights.fetch(args.name, progress=True)
        except weights.WeightsError as exc:
            raise UserError(str(exc)) from None
        print(f"vigil: {args.name} weights verified and cached at {path}")
        return EXIT_OK

    rows = [("name", "task", "cached", "file")]
    for entry in weights.entries():
        path = weights.cache_dir() / "weights" / entry.file_name
        rows.append((entry.name, entry.task, "yes" if path.exists() else "no", str(path)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
