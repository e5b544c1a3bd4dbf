"""Tests for the weights registry: lookup, resolve specs, fetch with checksum, offline errors.

Nothing here touches the internet: downloads go to an ``http.server`` on 127.0.0.1 or to a
closed local port. ``VIGIL_CACHE`` points at a temp dir in every test.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from models import download as D
from models import weights as W
from models.weights import ResolvedWeights, WeightsEntry, WeightsError, WeightsRegistry


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty cache and no model packs."""
    root = tmp_path / "cache"
    monkeypatch.setenv("VIGIL_CACHE", str(root))
    monkeypatch.setattr(W, "PACKS", {})
    return root


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """No backoff sleeps in tests (the retry logic is what is tested, not the wall clock)."""
    monkeypatch.setattr(D, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.delenv(D.URL_BASE_ENV, raising=False)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY", "no_proxy", "NO_PROXY"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny_builder(**_: object) -> nn.Module:
    return nn.Linear(3, 2)


def make_entry(name: str = "tiny", url: str = "", sha256: str = "", **kw: object) -> WeightsEntry:
    return WeightsEntry(name=name, task="detection", url=url, sha256=sha256,
                        file_name=f"{name}.pth", builder=_tiny_builder,
                        categories=("__background__", "thing"), **kw)  # fmt: skip


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on 127.0.0.1; yields (directory, base URL)."""
    root = tmp_path / "served"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port_url(file_name: str) -> str:
    """A URL on a local port nobody listens on (connection refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{file_name}"


# --- registry ------------------------------------------------------------------------------


def test_register_duplicate_name_raises() -> None:
    registry = WeightsRegistry()
    registry.register(make_entry("a"))
    with pytest.raises(ValueError, match="'a' is already registered"):
        registry.register(make_entry("a"))


def test_get_unknown_name_lists_known_names() -> None:
    registry = WeightsRegistry()
    registry.register(make_entry("alpha"))
    registry.register(make_entry("beta"))
    with pytest.raises(WeightsError, match=r"unknown model 'gamma'; known models: alpha, beta"):
        registry.get("gamma")


def test_global_registry_holds_the_torchvision_models() -> None:
    detection = {e.name for e in W.entries("detection")}  # plus simnet once simnet.infer loads
    assert detection >= {
        "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn",
        "fasterrcnn_resnet50_fpn_v2", "retinanet_resnet50_fpn_v2",
        "ssdlite320_mobilenet_v3_large",
    }  # fmt: skip
    assert [e.name for e in W.entries("keypoints")] == [
        "keypointrcnn_resnet50_fpn", "openpifpaf_shufflenetv2k16", "openpifpaf_shufflenetv2k30",
        "openpifpaf_resnet50",
    ]  # fmt: skip
    assert {e.name for e in W.entries("segmentation")} == {
        "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large", "fcn_resnet50",
        "maskrcnn_resnet50_fpn_v2",
    }  # fmt: skip
    entry = W.get("fasterrcnn_mobilenet_v3_large_fpn")
    assert entry.sha256 == "fb6a3cc7" and entry.file_name.endswith("-fb6a3cc7.pth")
    assert entry.url.endswith("/" + entry.file_name)
    assert len(entry.categories) == 91 and entry.categories[1] == "person"
    assert len(W.get("deeplabv3_mobilenet_v3_large").categories) == 21
    assert W.get("keypointrcnn_resnet50_fpn").categories == ("no person", "person")
    for e in W.entries():
        if e.url:  # every downloadable file name carries its checksum prefix
            assert len(e.sha256) == 8 and f"-{e.sha256}." in e.file_name
        else:  # shipped in the repo (the sim pack): the full digest
            assert len(e.sha256) == 64


def test_torchvision_metadata_copy_matches_torchvision() -> None:
    from torchvision.models import get_model_builder, get_model_weights

    from models.torchvision_meta import TORCHVISION_MODELS

    for name, meta in TORCHVISION_MODELS.items():
        enum, builder = get_model_weights(name).DEFAULT, get_model_builder(name)
        assert meta["url"] == enum.url, name
        assert meta["builder"] == f"{builder.__module__}:{builder.__name__}", name
        assert meta["weights"] == str(enum), name
        assert meta["recipe"] == enum.meta.get("recipe", "?"), name
        assert meta["categories"] == tuple(enum.meta["categories"]), name
        assert W.get(name).categories == meta["categories"]


def test_reading_the_registry_and_checking_a_name_import_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from models import weights; from models.catalog import check_model; "
        "check_model('fasterrcnn_mobilenet_v3_large_fpn'); check_model('simnet'); "
        "weights.get('keypointrcnn_resnet50_fpn').path; "
        "import pipeline.cli, pipeline.graph.supervisor, pipeline.http; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))"
    )
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_entry_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="task must be one of"):
        WeightsEntry("x", "tracking", "", "", "x.pth", _tiny_builder, ())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sha256 must be lowercase hex"):
        make_entry(sha256="XYZ")


def test_build_is_seeded_and_leaves_global_rng_alone() -> None:
    entry = W.get("fasterrcnn_mobilenet_v3_large_320_fpn")
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = entry.build(seed=7).state_dict()
    assert torch.equal(torch.rand(1), expected_next)
    b = entry.build(seed=7).state_dict()
    c = entry.build(seed=8).state_dict()
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_cache_dir_follows_env(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert W.cache_dir() == cache
    assert make_entry().path == cache / "weights" / "tiny.pth"
    monkeypatch.delenv("VIGIL_CACHE")
    assert W.cache_dir() == Path.home() / ".cache" / "vigil"


# --- resolve -------------------------------------------------------------------------------


def test_resolve_none_is_random_init() -> None:
    resolved = W.resolve(make_entry(), "none")
    assert resolved.state_dict is None and resolved.source == "none"


def test_resolve_path_round_trips_a_state_dict(tmp_path: Path) -> None:
    source = nn.Linear(3, 2)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    resolved = W.resolve(make_entry(), path)
    assert resolved.source == "path" and str(path) in resolved.description
    target = nn.Linear(3, 2)
    W.load_weights(target, resolved)
    assert torch.equal(target.weight, source.weight) and torch.equal(target.bias, source.bias)
    # a training checkpoint holding the state_dict under "state_dict" also loads
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, path)
    assert torch.equal(W.resolve(make_entry(), str(path)).state_dict["bias"], source.bias)


def test_resolve_missing_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsError, match=f"weights file not found: {missing}"):
        W.resolve(make_entry(), str(missing))


def test_resolve_corrupt_file_is_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot load weights from"):
        W.resolve(make_entry(), path)


def test_load_weights_that_do_not_fit_is_a_weights_error() -> None:
    other = ResolvedWeights(nn.Linear(5, 2).state_dict(), "path", "")
    with pytest.raises(WeightsError, match="weights do not fit tiny"):
        W.load_weights(nn.Linear(3, 2), other, name="tiny")
    extra = ResolvedWeights({**nn.Linear(3, 2).state_dict(), "x": torch.zeros(1)}, "path", "")
    with pytest.raises(WeightsError, match="1 unexpected keys"):
        W.load_weights(nn.Linear(3, 2), extra, name="tiny")


def test_resolve_pretrained_offline_names_file_and_path(cache: Path) -> None:
    """Offline with no cached file: one line naming exactly what to place where."""
    entry = make_entry(url=closed_port_url("tiny.pth"))
    with pytest.raises(WeightsError) as info:
        W.resolve(entry, "pretrained")
    message = str(info.value)
    assert "tiny.pth" in message and str(cache / "weights" / "tiny.pth") in message
    assert "\n" not in message
    assert list((cache / "weights").iterdir()) == []  # no partial file left behind


def test_resolve_pretrained_uses_the_cached_file(cache: Path) -> None:
    entry = make_entry(url=closed_port_url("tiny.pth"))
    entry.path.parent.mkdir(parents=True)
    torch.save(nn.Linear(3, 2).state_dict(), entry.path)
    resolved = W.resolve(entry, "pretrained")
    assert resolved.source == "pretrained" and set(resolved.state_dict) == {"weight", "bias"}


def test_resolve_auto_prefers_cache_then_pack_then_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_dir: tuple[Path, str], cache: Path
) -> None:
    root, base = http_dir
    served = nn.Linear(3, 2)
    torch.save(served.state_dict(), root / "tiny.pth")
    entry = make_entry(url=f"{base}/tiny.pth", sha256=_sha(root / "tiny.pth"))

    pack = tmp_path / "sim"
    pack.mkdir()
    torch.save(nn.Linear(3, 2).state_dict(), pack / "tiny.pt")
    monkeypatch.setattr(W, "PACKS", {"missing": tmp_path / "nowhere", "sim": pack})
    assert W.resolve(entry, "auto").source == "pack:sim"
    assert not entry.path.exists()  # a pack file is used as is: nothing downloaded

    monkeypatch.setattr(W, "PACKS", {})
    resolved = W.resolve(entry, "auto")  # first use: downloaded, verified, cached
    assert resolved.source == "pretrained" and entry.path.is_file()
    assert torch.equal(resolved.state_dict["weight"], served.weight)

    (root / "tiny.pth").unlink()  # the cached file is used from now on: no network needed
    assert W.resolve(entry, "auto").source == "pretrained"


def test_resolve_auto_offline_is_an_error_not_random(cache: Path) -> None:
    """Random weights only when asked: auto with no file and no network names what to do."""
    url = closed_port_url("tiny.pth")
    with pytest.raises(WeightsError) as info:
        W.resolve(make_entry(url=url), "auto")
    message = str(info.value)
    assert message.startswith("no network: cannot download tiny.pth")
    assert url in message and str(cache / "weights" / "tiny.pth") in message
    assert "--weights none" in message and "\n" not in message
    # an entry with nothing to download (e.g. simnet without its pack) is the caller's call
    assert W.resolve(make_entry(), "auto").source == "random"


# --- fetch ---------------------------------------------------------------------------------


def test_fetch_with_right_checksum_lands_in_cache(http_dir: tuple[Path, str], cache: Path) -> None:
    root, base = http_dir
    payload = b"\x00weights\xff" * 1000
    (root / "tiny.pth").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    path = W.fetch(make_entry(url=f"{base}/tiny.pth", sha256=digest), progress=False)
    assert path == cache / "weights" / "tiny.pth" and path.read_bytes() == payload
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.pth"]
    # a torchvision-style 8-digit prefix is checked the way torch.hub checks it
    path.unlink()
    W.fetch(make_entry(url=f"{base}/tiny.pth", sha256=digest[:8]), progress=False)
    assert path.read_bytes() == payload


def test_fetch_with_wrong_checksum_fails_and_leaves_no_file(
    http_dir: tuple[Path, str], cache: Path
) -> None:
    root, base = http_dir
    payload = b"tampered" * 100
    (root / "tiny.pth").write_bytes(payload)
    entry = make_entry(url=f"{base}/tiny.pth", sha256="0" * 64)
    with pytest.raises(WeightsError) as info:
        W.fetch(entry, progress=False)
    message = str(info.value)
    assert "0" * 64 in message and hashlib.sha256(payload).hexdigest() in message
    assert list((cache / "weights").iterdir()) == []


def test_fetch_http_404_is_a_weights_error(http_dir: tuple[Path, str], cache: Path) -> None:
    _, base = http_dir
    with pytest.raises(WeightsError, match=r"could not download tiny\.pth .*HTTP 404"):
        W.fetch(make_entry(url=f"{base}/tiny.pth"), progress=False)
    assert list((cache / "weights").iterdir()) == []


def test_fetch_times_out_on_a_silent_server(cache: Path) -> None:
    """A server that accepts the connection but never answers must not hang the caller."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # connections complete in the backlog; nothing is ever sent
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/tiny.pth"
        with pytest.raises(WeightsError, match=r"could not download tiny\.pth"):
            W.fetch(make_entry(url=url), progress=False, timeout_s=0.3)


# --- cut downloads, resume, retry, override, proxy, SSL -----------------------------------


class FlakyServer:
    """An HTTP server on 127.0.0.1 serving one payload at ``/<name>``, that can cut responses.

    ``cuts``: how many responses (from the first) send only half their bytes and close the
    connection; ``ranges``: whether ``Range: bytes=N-`` requests get ``206`` (else the whole
    file, ``200``). ``requests`` records each request's Range header ('' for none).
    """

    def __init__(self, payload: bytes, *, cuts: int, ranges: bool) -> None:
        self.payload, self.cuts, self.ranges = payload, cuts, ranges
        self.requests: list[str] = []
        flaky = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                requested = self.headers.get("Range", "")
                flaky.requests.append(requested)
                start = 0
                if requested and flaky.ranges:
                    start = int(requested.removeprefix("bytes=").rstrip("-"))
                body = flaky.payload[start:]
                self.send_response(206 if start else 200)
                if start:
                    total = len(flaky.payload)
                    self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if flaky.cuts > 0:  # half the bytes, then hang up, as a dropped link does
                    flaky.cuts -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def flaky() -> Iterator[Callable[..., FlakyServer]]:
    servers: list[FlakyServer] = []

    def make(payload: bytes, *, cuts: int = 0, ranges: bool = True) -> FlakyServer:
        servers.append(FlakyServer(payload, cuts=cuts, ranges=ranges))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


PAYLOAD = bytes(range(256)) * 4096  # 1 MiB: several read chunks, cut in the middle of one


def test_cut_download_resumes_with_a_range_request(flaky, cache: Path) -> None:
    server = flaky(PAYLOAD, cuts=1, ranges=True)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    path = W.fetch(make_entry(url=f"{server.base}/tiny.pth", sha256=digest[:8]), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["", f"bytes={len(PAYLOAD) // 2}-"]  # resumed at the cut
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.pth"]


def test_cut_download_starts_over_when_the_server_ignores_range(flaky, cache: Path) -> None:
    server = flaky(PAYLOAD, cuts=2, ranges=False)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    path = W.fetch(make_entry(url=f"{server.base}/tiny.pth", sha256=digest), progress=False)
    assert path.read_bytes() == PAYLOAD  # the 200 replies were not appended to the partial file
    assert len(server.requests) == 3


def test_download_cut_every_time_fails_clearly_then_resumes_next_run(flaky, cache: Path) -> None:
    server = flaky(PAYLOAD, cuts=3, ranges=True)
    entry = make_entry(url=f"{server.base}/tiny.pth", sha256=hashlib.sha256(PAYLOAD).hexdigest())
    with pytest.raises(WeightsError) as info:
        W.fetch(entry, progress=False, attempts=3)
    message = str(info.value)
    assert "could not download tiny.pth" in message and "connection closed after" in message
    assert "(3 attempts)" in message and str(entry.path) in message and "\n" not in message
    assert not entry.path.exists()  # nothing unverified in the cache
    part = entry.path.parent / ".tiny.pth.part"
    assert 0 < part.stat().st_size < len(PAYLOAD)  # kept for the next run
    have = part.stat().st_size
    assert W.fetch(entry, progress=False).read_bytes() == PAYLOAD  # the link is back
    assert server.requests[-1] == f"bytes={have}-" and not part.exists()


def test_wrong_checksum_after_resume_deletes_the_partial_file(flaky, cache: Path) -> None:
    server = flaky(PAYLOAD, cuts=1, ranges=True)
    entry = make_entry(url=f"{server.base}/tiny.pth", sha256="deadbeef")
    with pytest.raises(WeightsError, match="checksum mismatch for tiny.pth.*deadbeef"):
        W.fetch(entry, progress=False)
    assert list(entry.path.parent.iterdir()) == []


def test_url_base_override_replaces_the_host_for_every_entry(
    http_dir: tuple[Path, str], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, base = http_dir
    (root / "tiny.pth").write_bytes(PAYLOAD)
    entry = make_entry(url="https://download.example.invalid/models/tiny.pth")
    assert W.download_url(entry) == entry.url
    monkeypatch.setenv(D.URL_BASE_ENV, base + "/")
    assert W.download_url(entry) == f"{base}/tiny.pth"
    assert W.fetch(entry, progress=False).read_bytes() == PAYLOAD
    real = W.get("fasterrcnn_mobilenet_v3_large_320_fpn")
    assert W.download_url(real) == f"{base}/fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"


def test_refused_connection_is_no_network_and_not_retried(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(D, "RETRY_BACKOFF_S", 3600.0)  # a retry would hang the test
    url = closed_port_url("tiny.pth")
    with pytest.raises(WeightsError, match=r"^no network: cannot download tiny\.pth"):
        W.fetch(make_entry(url=url), progress=False)


def test_proxy_failure_is_one_line_naming_the_proxy_without_credentials(
    http_dir: tuple[Path, str], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, base = http_dir
    proxy = closed_port_url("").rstrip("/").replace("http://", "http://bob:secret@")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    with pytest.raises(WeightsError) as info:
        W.fetch(make_entry(url=f"{base}/tiny.pth"), progress=False)
    message = str(info.value)
    assert message.startswith("proxy error downloading tiny.pth") and "HTTPS_PROXY" in message
    assert "secret" not in message and "***@127.0.0.1" in message and "\n" not in message


def test_ssl_failure_is_one_line_with_a_hint(http_dir: tuple[Path, str], cache: Path) -> None:
    _, base = http_dir  # plain HTTP spoken to a TLS client: the handshake fails
    url = base.replace("http://", "https://") + "/tiny.pth"
    with pytest.raises(WeightsError) as info:
        W.fetch(make_entry(url=url), progress=False)
    message = str(info.value)
    assert message.startswith("SSL error downloading tiny.pth") and "SSL_CERT_FILE" in message
    assert str(make_entry().path) in message and "\n" not in message


def test_a_download_larger_than_any_weights_file_is_refused(
    flaky, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault: the body was written to disk until the server stopped, so a wrong or hostile
    VIGIL_WEIGHTS_URL_BASE could fill the disk before the checksum was checked."""
    monkeypatch.setattr(D, "MAX_DOWNLOAD_BYTES", len(PAYLOAD) - 1)
    server = flaky(PAYLOAD, cuts=0, ranges=True)
    entry = make_entry(url=f"{server.base}/tiny.pth")
    with pytest.raises(WeightsError, match="over the .*-byte limit"):
        W.fetch(entry, progress=False)
    assert server.requests == [""]  # refused at once, not retried
    assert list(entry.path.parent.iterdir()) == []  # no partial file left behind
