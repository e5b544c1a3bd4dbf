"""First use of real weights from the CLI: the per-device default detector, the download before
any stage starts, exit 2 offline, random weights only when asked, the demo's sim pack.

Nothing here touches the internet: downloads go to an ``http.server`` on 127.0.0.1 or to a
refused local port (``VIGIL_WEIGHTS_URL_BASE``). No pipeline is run: :func:`prepare_models`
and the CLI's checks run in this process, before the pipeline would start its stages.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from models import catalog
from models import download as D
from models import weights as W
from pipeline import cli, commands
from pipeline.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("VIGIL_CACHE", str(root))
    return root


@pytest.fixture
def refused_base(monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL base of a local port nobody listens on: every download is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{s.getsockname()[1]}/mirror"
    monkeypatch.setenv(D.URL_BASE_ENV, base)
    return base


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder served on 127.0.0.1 and set as the URL base; yields the folder."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv(D.URL_BASE_ENV, f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_default_detector_per_device(monkeypatch: pytest.MonkeyPatch) -> None:
    name, why = catalog.default_detector("cpu")
    assert name == catalog.CPU_DETECTOR == "ssdlite320_mobilenet_v3_large"
    assert "65 ms of CPU time per 640x360 frame" in why and "\n" not in why
    name, why = catalog.default_detector("cuda:1")
    assert name == catalog.CUDA_DETECTOR == "fasterrcnn_mobilenet_v3_large_fpn"
    assert "stronger" in why
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert catalog.cuda_present() == (False, "no GPU (CUDA_VISIBLE_DEVICES hides them)")
    assert catalog.default_detector("auto")[0] == catalog.CPU_DETECTOR
    assert load_config(None).detect.model == "auto"  # the default config asks for the pick


def test_detector_auto_builds_the_device_default() -> None:
    from models.detection import Detector

    det = Detector(model="auto", weights="none", device="cpu", input_size=64)
    assert det.entry.name == catalog.CPU_DETECTOR and det.weights_source == "none"


def test_process_offline_exits_2_naming_file_url_and_path(
    tiny_video: Path, tmp_path: Path, refused_base: str, empty_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    rc = cli.main(["process", str(tiny_video), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    entry = W.get(catalog.default_detector("auto")[0])
    assert rc == 2
    error = err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("vigil: error: no network"), err
    assert "no network" in error[0] and entry.file_name in error[0]
    assert f"{refused_base}/{entry.file_name}" in error[0]
    assert str(empty_cache / "weights" / entry.file_name) in error[0]
    assert "--weights none" in error[0]
    assert not (tmp_path / "o" / "annotated.mp4").exists()


def test_bad_input_is_reported_before_any_download(
    tmp_path: Path, refused_base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli.main(["process", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "no such file" in err and "download" not in err


def _cfg(**detect: object) -> object:
    return load_config(None, {f"detect.{k}": v for k, v in detect.items()})


def test_weights_none_never_downloads_and_the_pick_is_said(
    monkeypatch: pytest.MonkeyPatch, refused_base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_fetch(*args: object, **kwargs: object) -> None:
        raise AssertionError("weights: none must not download")

    monkeypatch.setattr(W, "fetch", no_fetch)
    cfg = _cfg(weights="none")  # model: auto
    commands.prepare_models(cfg)
    model, why = catalog.default_detector("auto")
    assert cfg.detect.model == model  # the stages get the concrete name
    assert capsys.readouterr().err.splitlines() == [f"vigil: detector {model}: {why}"]
    cfg = _cfg(model="fasterrcnn_mobilenet_v3_large_320_fpn", weights="none")
    commands.prepare_models(cfg)
    assert capsys.readouterr().err == ""  # an explicit model: nothing to explain
    cfg = _cfg(model="simnet")  # the sim pack ships in the repo: auto finds it offline
    commands.prepare_models(cfg)


def test_first_use_downloads_verifies_and_caches_before_the_stages(
    served: Path, empty_cache: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    payload = b"not really a state_dict, but fetched and verified all the same" * 100
    (served / "tiny-0123.pth").write_bytes(payload)
    registry = W.WeightsRegistry()
    registry.register(
        W.WeightsEntry(
            name="tiny", task="detection", url="https://download.example.invalid/tiny-0123.pth",
            sha256=hashlib.sha256(payload).hexdigest()[:8], file_name="tiny-0123.pth",
            builder="torch.nn:Identity", categories=("__background__", "thing"),
        )
    )  # fmt: skip
    monkeypatch.setattr(W, "REGISTRY", registry)
    commands.prepare_models(_cfg(model="tiny"))
    assert (empty_cache / "weights" / "tiny-0123.pth").read_bytes() == payload
    assert "(first use)" in capsys.readouterr().err
    commands.prepare_models(_cfg(model="tiny"))  # cached: no second download, no message
    assert "(first use)" not in capsys.readouterr().err

    (served / "tiny-0123.pth").write_bytes(b"tampered")
    (empty_cache / "weights" / "tiny-0123.pth").unlink()
    with pytest.raises(commands.UserError, match="checksum mismatch for tiny-0123.pth"):
        commands.prepare_models(_cfg(model="tiny"))
    (served / "tiny-0123.pth").unlink()
    with pytest.raises(commands.UserError, match=r"tiny-0123\.pth .*HTTP 404"):
        commands.prepare_models(_cfg(model="tiny", weights="pretrained"))


def test_demo_keeps_the_sim_pack_offline(refused_base: str) -> None:
    assert commands.demo_model(commands.DEMO_CONFIG) == "simnet"


def test_configs_ask_for_what_they_need() -> None:
    """Shipped configs: the demo resolves offline (cache or sim pack); the others name real
    weights (pretrained: downloaded on first use, never random without asking)."""
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.detect.weights in ("auto", "pretrained", "none"), path.name
        catalog.check_model(cfg.detect.model)
