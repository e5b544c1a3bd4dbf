"""The bodies of the ``vigil`` subcommands (:mod:`pipeline.cli` holds the parser and ``main``).

``cmd_process``, ``cmd_run`` and ``cmd_demo`` check what they can in this process (config,
detector, inputs, output folder, weights; :class:`UserError` on bad input, exit 2), then start
the process graph (:func:`pipeline.graph.supervisor.run_pipeline`) or a batch archive
(:mod:`pipeline.archive`); ``cmd_subscribe``, ``cmd_replay``, ``cmd_models`` and
``cmd_streams`` are small clients. Heavy modules (torch, av) are imported inside the commands,
never at import time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from pipeline.logs import say

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"

log = logging.getLogger("vigil")


class UserError(Exception):
    """Bad input or set-up: printed as one line, exit status 2."""


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    g = lambda name: getattr(args, name, None)  # noqa: E731
    return {
        "output.dir": str(g("out")) if g("out") else None,
        "publish.events": g("events"),
        "publish.frames": g("frames"),
        "publish.replay": g("replay"),
        "publish.journal": "off" if g("no_journal") else g("journal"),
        "publish.wait_subscribers": g("wait_subscribers"),
        "detect.model": g("model"),
        "detect.weights": g("weights"),
        "detect.score_threshold": g("score_threshold"),
        "detect.iou_threshold": g("iou_threshold"),
        "detect.classes": g("classes").split(",") if g("classes") else None,
        "detect.device": g("device"),
        "output.video": False if g("no_video") else None,
        "runtime.progress": False if g("no_progress") else None,
        "runtime.mode": g("mode"),
        "runtime.duration_s": g("duration"),
        "runtime.control": g("control"),
        "runtime.http": g("http"),
        "runtime.insecure": True if g("insecure") else None,
        "output.existing": "overwrite" if g("overwrite") else None,
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
    for src in cfg.sources:
        if getattr(args, "stream_id", None) and input_uri is None:
            src.stream_id = args.stream_id
        if getattr(args, "loop", False):
            src.loop = True
    return cfg


def cmd_process(args: argparse.Namespace) -> int:
    from pipeline.archive import engines, inputs, run

    specs = [args.input] if isinstance(args.input, str) else list(args.input)
    if getattr(args, "engine", None) == "ray":
        try:
            engines.import_ray()
        except inputs.ArchiveError as exc:
            raise UserError(str(exc)) from None
    if inputs.is_single_file(specs):
        return _execute(_load(args.config, args, input_uri=specs[0]))
    # Batch archive: each input is one file run in-process (see pipeline/archive/).
    cfg = _load(args.config, args)
    live_only = {
        "--events": cfg.publish.events,
        "--frames": cfg.publish.frames,
        "--replay": getattr(cfg.publish, "replay", None),
        "--control": getattr(cfg.runtime, "control", None),
        "--duration": getattr(cfg.runtime, "duration_s", None),
        "--mode live": getattr(cfg.runtime, "mode", "batch") == "live",
        "--http": cfg.runtime.http,
        "--loop": any(src.loop for src in cfg.sources) or getattr(args, "loop", False),
    }
    used = [flag for flag, value in live_only.items() if value]
    if used:
        raise UserError(
            f"{', '.join(used)}: not for a batch archive (it writes files, every frame)"
        )
    from pydantic import ValidationError

    try:
        for key in ("workers", "engine", "ray_address"):
            if getattr(args, key, None) is not None:
                setattr(cfg.archive, key, getattr(args, key))
    except ValidationError as exc:
        raise UserError(f"invalid --{key.replace('_', '-')}: {exc.errors()[0]['msg']}") from None
    from models.weights import WeightsError

    check_detector(cfg)
    try:
        todo = inputs.expand_inputs(
            specs, out_dir=cfg.output.dir, extensions=cfg.archive.extensions
        )
        prepare_models(cfg)
        summary = run.run_archive(
            cfg, todo, cfg.output.dir, stream_id=getattr(args, "stream_id", None) or "cam1"
        )
    except (inputs.ArchiveError, WeightsError) as exc:
        raise UserError(str(exc)) from None
    for rec in summary.records:
        if rec["status"] == "failed":
            where = "" if rec["path"] in (rec["error"] or "") else f"{rec['path']}: "
            say(f"failed: {where}{rec['error']}", logging.ERROR)
    say(run.summary_line(summary, cfg.output.dir))
    if summary.interrupted:
        say("stopped on request; run the same command again to resume", logging.WARNING)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary.failed else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    return _execute(_load(args.config, args))


def cmd_demo(args: argparse.Namespace) -> int:
    from models.weights import cache_dir
    from stream.sim.sample import demo_sample

    video, gt = demo_sample(cache_dir() / "sample")
    say(f"synthetic sample video {video} (ground truth {gt})", prefix="vigil demo")
    args.config = DEMO_CONFIG
    args.stream_id = "demo"
    if args.model is None:
        args.model = demo_model(DEMO_CONFIG)
    return cmd_process(argparse.Namespace(**{**vars(args), "input": str(video)}))


def demo_model(config: Path) -> str:
    """The demo's detector: the config's COCO detector when its pretrained weights are cached,
    else the project's ``sim`` pack (``simnet``, trained on the synthetic world)."""
    from models import weights
    from pipeline.config import load_config

    model = load_config(config).detect.model
    entry = weights.get(model)
    if entry.path.is_file():
        say(f"using {model} with its cached pretrained weights", prefix="vigil demo")
        return model
    say(
        f"no pretrained weights cached for {model} (at {entry.path}); using the sim pack "
        "(simnet, trained offline on the synthetic world by scripts/train_sim.py)",
        prefix="vigil demo",
    )
    return "simnet"


def _execute(cfg: Any) -> int:
    from pipeline.access import ExposureError, check_exposure, read_token
    from pipeline.graph.process import StageFailed
    from pipeline.graph.supervisor import run_pipeline
    from stream.sources import SourceError, probe_source

    if not cfg.sources and not cfg.runtime.control:
        raise UserError("no sources: give an INPUT, or list sources in the config")
    check_detector(cfg)
    try:
        check_exposure(cfg, warn=False)  # nothing beyond loopback unprotected
        if cfg.runtime.http and cfg.runtime.http_token_file:
            read_token(cfg.runtime.http_token_file)
    except ExposureError as exc:
        raise UserError(str(exc)) from None
    check_mqtt_files(cfg)
    totals: int | None = 0
    for src in cfg.sources:  # fail fast, in this process, on inputs that cannot be opened
        try:
            # None: a camera (down now: it is retried)
            frames = probe_source(src.uri, max_pixels=src.max_pixels)
        except SourceError as exc:
            raise UserError(str(exc)) from None
        if totals is not None:  # the bar has a total only when every source ends
            totals = None if src.loop or not frames else totals + frames
    _prepare_output(cfg, set_aside=False)
    prepare_models(cfg)  # after the inputs: no download for a run that cannot start
    _prepare_output(cfg, set_aside=True)
    try:
        summary = run_pipeline(cfg, progress_total=totals or None)
    except StageFailed as exc:
        if exc.user:
            raise UserError(exc.message.split(": ", 1)[-1]) from None
        say(f"error: {exc}\n{exc.traceback}".rstrip("\n"), logging.ERROR)
        return EXIT_FAILED
    out = cfg.output.dir
    say(
        f"{summary.frames} frames in {summary.seconds:.1f} s "
        f"({summary.fps:.1f} frames/s), {summary.events} events"
    )
    if summary.detector:
        say(f"detector {summary.detector}")
    for sid, end in summary.streams.items():
        if end["reason"] == "truncated":
            say(
                f"warning: stream {sid} truncated: read {end['frames_read']} frames "
                f"before the break ({end['detail']}); all of them processed",
                logging.WARNING,
            )
    written = [p for p in (out / "annotated.mp4", out / "events.jsonl") if p.exists()]
    if written:
        say("wrote " + ", ".join(str(p) for p in written))
    if summary.interrupted:
        say("stopped on request; every frame read was processed", logging.WARNING)
    return EXIT_OK


def check_detector(cfg: Any) -> None:
    """UserError (exit 2) for an unknown ``detect.model``; needs no torch, no network."""
    from models.catalog import check_model
    from models.weights import WeightsError

    try:
        check_model(cfg.detect.model)
    except WeightsError as exc:
        raise UserError(str(exc)) from None


def prepare_models(cfg: Any) -> None:
    """Before any stage starts: pick the per-device default for ``detect.model: auto``, check a
    weights path, and download missing pretrained weights here, with the progress bar on this
    terminal. UserError (exit 2, one line) when that fails: offline, the message names the
    file, its URL and the path to place it at. On success, one line says which detector was
    picked and why (for ``auto``) and one line per file downloaded."""
    from models import weights
    from models.catalog import CUSTOM_PERCEIVERS, check_model, default_detector

    det = cfg.detect
    lines = []
    try:
        check_model(det.model)
        if det.model == "auto":
            det.model, why = default_detector(det.device)
            lines.append(f"detector {det.model}: {why}")
        wanted = [(det.model, det.weights)]
        if cfg.segment.enabled:
            wanted.append((cfg.segment.model, cfg.segment.weights))
        for model, spec in wanted:
            if model in CUSTOM_PERCEIVERS or model.lower() in ("none", "off"):
                continue
            entry = weights.get(model)
            if spec not in ("auto", "pretrained", "none"):
                path = Path(spec).expanduser()
                if not path.is_file():
                    raise weights.WeightsError(f"weights file not found: {path} (for {model})")
            elif weights.needs_download(entry, spec):
                log.info("downloading %s from %s", entry.file_name, weights.download_url(entry))
                path = weights.fetch(entry)
                size_mb = path.stat().st_size / 1e6
                lines.append(f"downloaded {entry.file_name} ({size_mb:.1f} MB, sha256 "
                             f"verified) to {path} (first use)")  # fmt: skip
    except weights.WeightsError as exc:
        raise UserError(str(exc)) from None
    for line in lines:
        say(line)


def check_mqtt_files(cfg: Any) -> None:
    """UserError (exit 2, one line) for an MQTT password or TLS file that cannot be read: the
    publish stage reads them only once it runs, where a failure would be a crashed stage."""
    mqtt = cfg.publish.mqtt
    if mqtt is None:
        return
    for key in ("password_file", "tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(mqtt, key)
        if path is None:
            continue
        try:
            Path(path).expanduser().open("rb").close()
        except OSError as exc:
            raise UserError(f"publish.mqtt.{key}: cannot read {path}: {exc.strerror}") from None


def _prepare_output(cfg: Any, *, set_aside: bool) -> None:
    """Before anything starts: the output folder is writable and the journal sound; with
    ``set_aside``, a previous run's outputs are kept or deleted (``output.existing``), which is
    done last, once the models are ready, so a run that cannot start deletes nothing. See
    :mod:`pipeline.outputs`."""
    from pipeline import outputs

    out = cfg.output.dir
    note = None
    try:
        if set_aside:
            note = outputs.set_aside_previous(out, cfg.output.existing)
        else:
            outputs.check_output_dir(out)
            journal = outputs.journal_path(cfg.publish.journal, out)
            if journal is not None:
                outputs.check_journal(journal)
    except outputs.OutputError as exc:
        raise UserError(str(exc)) from None
    if note:
        say(note)


def cmd_subscribe(args: argparse.Namespace) -> int:
    from pipeline.config_runtime import check_endpoint
    from stream.client import EventClient, PublisherDead

    try:
        for endpoint in (args.endpoint, args.replay):
            if endpoint:
                check_endpoint(endpoint)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.from_seq is not None and not args.replay:
        raise UserError("--from-seq needs --replay ENDPOINT (the publisher's replay endpoint)")
    try:
        client = EventClient(
            args.endpoint,
            args.replay,
            from_seq=args.from_seq,
            types=args.type or None,
            streams=[args.stream] if args.stream else None,
            heartbeat_timeout_s=None,
            curve_server_key=Path(args.server_key) if args.server_key else None,
            curve_client_cert=args.client_key,
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot use the CURVE keys: {exc}") from None
    seen = 0
    try:
        while args.count is None or seen < args.count:
            try:
                event = client.recv(timeout_s=args.timeout)
            except PublisherDead as exc:
                log.warning("%s", exc)
                continue
            if event is None:
                break
            print(json.dumps(event, separators=(",", ":"), ensure_ascii=False), flush=True)
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    from stream.journal import EventJournal, JournalError

    try:
        journal = EventJournal.open_reader(args.journal)
    except JournalError as exc:
        raise UserError(str(exc)) from None
    try:
        for line in journal.read_after(args.from_seq, args.count, types=args.type or None):
            print(line)
    except BrokenPipeError:  # `vigil replay ... | head`
        pass
    except sqlite3.Error as exc:  # a page damaged past the header: one line, not a traceback
        raise UserError(f"cannot read the event journal {args.journal}: {exc}") from None
    finally:
        journal.close()
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from models import weights

    if args.action == "fetch":
        if not args.name:
            raise UserError("vigil models fetch needs a model NAME (see `vigil models list`)")
        try:
            path = weights.fetch(args.name)  # a progress bar on a terminal only
        except weights.WeightsError as exc:
            raise UserError(str(exc)) from None
        print(f"vigil: {args.name} weights verified and cached at {path}")
        return EXIT_OK

    from models.runtime.options import model_backends

    rows = [("name", "task", "backends", "cached", "file")]
    for entry in weights.entries():
        path = weights.cache_dir() / "weights" / entry.file_name
        cached = "yes" if path.exists() else "no"
        rows.append((entry.name, entry.task, model_backends(entry), cached, str(path)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return EXIT_OK


def cmd_streams(args: argparse.Namespace) -> int:
    """``vigil streams add|remove|list``: one request to the control endpoint (see
    :mod:`pipeline.control`); exit 0 on ``ok``, 1 on a refused request, 2 on no reply."""
    from pipeline.config_runtime import check_endpoint
    from pipeline.control import ControlError, request

    try:
        check_endpoint(args.control)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    message: dict[str, Any] = {"op": args.action}
    if args.action == "add":
        if not args.uri:
            raise UserError("vigil streams add needs a URI")
        message["uri"] = args.uri
    if args.stream_id:
        message["stream_id"] = args.stream_id
    elif args.action == "remove":
        raise UserError("vigil streams remove needs --stream-id")
    from stream.zsocket import load_client_keys

    try:
        curve = load_client_keys(args.server_key, args.client_key)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot use the CURVE keys: {exc}") from None
    if args.client_key and not args.server_key:
        raise UserError("--client-key needs --server-key (vigil's public certificate)")
    try:
        reply = request(args.control, message, timeout_s=args.timeout, curve=curve)
    except ControlError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(reply))
    if not reply.get("ok"):
        say(f"error: {reply.get('error', 'request refused')}", logging.ERROR)
        return EXIT_FAILED
    return EXIT_OK
