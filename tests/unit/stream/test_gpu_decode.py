"""Decode-to-device: the NV12 -> RGB conversion against PyAV's own, backends and fallbacks.

The CPU tests run the very code the CUDA path runs (DLPack planes -> :func:`nv12_to_rgb`) on
software-decoded frames; the ``gpu`` tests check NVDEC output on the device against them."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from models.gpu_ops import nv12_to_rgb, resize_rgb
from stream.gpu_decode import DecoderUnavailable, DeviceDecoder, decoder_status


def _colour_video(
    path: Path, *, n: int = 4, w: int = 64, h: int = 48, tag709: bool = False
) -> Path:
    """Smooth colour gradients (chroma upsampling differences stay small) plus a moving box."""
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": "10"}
        if tag709:
            s.codec_context.colorspace = 1
        for i in range(n):
            img = np.stack(
                [(xx * 255 // w), (yy * 255 // h), ((xx + yy + 8 * i) * 2) % 256], -1
            ).astype(np.uint8)
            img[8:24, 4 + 4 * i : 20 + 4 * i] = (220, 30, 40)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode(None))
    return path


def _pyav_rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_nv12_to_rgb_matches_pyav_conversion(tmp_path: Path) -> None:
    video = _colour_video(tmp_path / "c.mp4")
    ref = _pyav_rgb(video)
    with av.open(str(video)) as c:
        for f, want in zip(c.decode(video=0), ref):
            nv = f.reformat(format="nv12")
            y = torch.from_dlpack(nv.planes[0].__dlpack__())
            uv = torch.from_dlpack(nv.planes[1].__dlpack__())
            got = nv12_to_rgb(y, uv).permute(1, 2, 0).numpy()
            diff = np.abs(got.astype(int) - want.astype(int))
            assert got.shape == want.shape
            assert diff.mean() < 2.0, diff.mean()
            assert np.percentile(diff, 99) <= 12  # chroma edges of the box only


def test_nv12_to_rgb_wrong_matrix_is_detected(tmp_path: Path) -> None:
    """Guard that the tolerance above can fail: BT.709 on BT.601 content is visibly off."""
    video = _colour_video(tmp_path / "c.mp4", n=1)
    want = _pyav_rgb(video)[0]
    with av.open(str(video)) as c:
        nv = next(c.decode(video=0)).reformat(format="nv12")
    y = torch.from_dlpack(nv.planes[0].__dlpack__())
    uv = torch.from_dlpack(nv.planes[1].__dlpack__())
    got = nv12_to_rgb(y, uv, matrix="bt709").permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - want.astype(int)).mean() >= 2.0


def test_nv12_to_rgb_batched_float_and_resized() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(16, 236, (2, 8, 12), dtype=torch.uint8, generator=g)
    uv = torch.randint(16, 241, (2, 4, 6, 2), dtype=torch.uint8, generator=g)
    u8 = nv12_to_rgb(y, uv)
    assert u8.shape == (2, 3, 8, 12) and u8.dtype == torch.uint8
    f = nv12_to_rgb(y, uv, dtype=torch.float32)
    assert torch.allclose(f * 255, u8.float(), atol=0.51)
    assert torch.equal(nv12_to_rgb(y[1], uv[1]), u8[1])
    small = nv12_to_rgb(y, uv, size=(4, 6))
    assert small.shape == (2, 3, 4, 6)
    # Grey in = grey out: Y=126, U=V=128 is limited-range (126-16)*255/219 = 128.08 -> 128.
    grey = nv12_to_rgb(torch.full((2, 2), 126, dtype=torch.uint8),
                       torch.full((1, 1, 2), 128, dtype=torch.uint8))  # fmt: skip
    assert grey.unique().tolist() == [128]


def test_nv12_to_rgb_rejects_mismatched_planes() -> None:
    with pytest.raises(ValueError, match="chroma plane"):
        nv12_to_rgb(torch.zeros(8, 8, dtype=torch.uint8), torch.zeros(3, 4, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match="expected y"):
        nv12_to_rgb(torch.zeros(8, 8, dtype=torch.uint8), torch.zeros(4, 4, dtype=torch.uint8))


def test_resize_rgb_keeps_dtype_and_constant_images() -> None:
    img = torch.full((3, 10, 20), 77, dtype=torch.uint8)
    out = resize_rgb(img, (5, 10))
    assert out.shape == (3, 5, 10) and out.dtype == torch.uint8 and out.unique().tolist() == [77]
    assert resize_rgb(img, (10, 20)) is img


def test_software_decoder_on_cpu_equals_pyav(tmp_path: Path) -> None:
    video = _colour_video(tmp_path / "c.mp4", n=5)
    ref = _pyav_rgb(video)
    dec = DeviceDecoder(video, device="cpu")
    assert dec.backend == "software"
    frames = list(dec.frames())
    assert [f.frame_idx for f in frames] == list(range(5))
    assert [f.pts for f in frames] == pytest.approx([i / 10 for i in range(5)])
    for f, want in zip(frames, ref):
        assert f.rgb.device.type == "cpu" and f.rgb.shape == (3, 48, 64) and not f.on_device
        assert np.abs(f.rgb.permute(1, 2, 0).numpy().astype(int) - want).mean() < 2.0


def test_decoder_reads_bt709_tag(tmp_path: Path) -> None:
    video = _colour_video(tmp_path / "c709.mp4", n=1, tag709=True)
    want = _pyav_rgb(video)[0]
    got = next(iter(DeviceDecoder(video, device="cpu"))).rgb.permute(1, 2, 0).numpy()
    assert np.abs(got.astype(int) - want).mean() < 2.0


def test_decoder_resizes(tmp_path: Path) -> None:
    video = _colour_video(tmp_path / "c.mp4", n=2)
    frames = list(DeviceDecoder(video, device="cpu", size=(24, 32)))
    assert all(f.rgb.shape == (3, 24, 32) for f in frames)


def test_cuda_backends_unavailable_without_cuda_say_why(tmp_path: Path) -> None:
    """Fault: asking for NVDEC where there is none must fail with the reason, not crash later."""
    status = decoder_status("cpu")
    assert status["software"] is None
    assert all(status[b] == "needs a CUDA device" for b in ("pyav", "torchcodec", "pynvvideocodec"))
    video = _colour_video(tmp_path / "c.mp4", n=1)
    with pytest.raises(DecoderUnavailable, match="pyav: needs a CUDA device"):
        DeviceDecoder(video, device="cpu", backend="pyav")


def test_missing_package_is_skipped_with_reason(tmp_path: Path, monkeypatch) -> None:
    """Fault: torchcodec / PyNvVideoCodec not installed: ``auto`` skips them, logged."""
    import sys

    monkeypatch.setitem(sys.modules, "torchcodec", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    from stream import gpu_decode

    assert gpu_decode._import_reason("torchcodec").startswith(("ImportError", "ModuleNotFound"))
    monkeypatch.setattr(gpu_decode.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu_decode, "_import_reason", lambda name: f"{name} missing")
    video = _colour_video(tmp_path / "c.mp4", n=1)
    dec = DeviceDecoder(video, device="cuda:0", backend="auto")
    assert dec.backend == "software"
    assert dec.skipped == {b: f"{b} missing" for b in ("pyav", "torchcodec", "pynvvideocodec")}


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        DeviceDecoder(tmp_path / "nope.mp4", device="cpu")


# --- on a GPU --------------------------------------------------------------------------------


@pytest.mark.gpu
def test_nvdec_frames_stay_on_device_and_match_cpu(tmp_path: Path) -> None:
    video = _colour_video(tmp_path / "c.mp4", n=6, w=320, h=192)
    dec = DeviceDecoder(video, device="cuda", backend="pyav")
    cpu = list(DeviceDecoder(video, device="cpu"))
    gpu = list(dec.frames())
    assert len(gpu) == len(cpu) == 6
    for g, c in zip(gpu, cpu):
        assert g.rgb.is_cuda and g.on_device, "NVDEC frame went through the host"
        diff = (g.rgb.cpu().int() - c.rgb.int()).abs().float()
        assert diff.mean() < 2.0  # NVDEC and libavcodec decode H.264 bit-exactly; fp16 maths


@pytest.mark.gpu
def test_nv12_to_rgb_cuda_equals_cpu() -> None:
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 256, (3, 1080, 1920), dtype=torch.uint8, generator=g)
    uv = torch.randint(0, 256, (3, 540, 960, 2), dtype=torch.uint8, generator=g)
    cpu = nv12_to_rgb(y, uv, size=(540, 960))
    gpu = nv12_to_rgb(y.cuda(), uv.cuda(), size=(540, 960))
    assert gpu.is_cuda
    assert (gpu.cpu().int() - cpu.int()).abs().max() <= 2  # fp16 on CUDA vs fp32 on CPU
