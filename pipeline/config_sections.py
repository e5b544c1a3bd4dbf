"""Config sections (pydantic v2) of the inputs and the models: ``sources``, ``detect``,
``people``, ``output``, ``archive``, ``segment``, ``pose``, ``backend``, and :class:`Strict`,
the base of every section (unknown keys rejected). The whole config is
:class:`pipeline.config.VigilConfig`; defaults live here, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base of every config section: unknown keys rejected, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

class SourceConfig(Strict):
    uri: str = Field(
        description="video file, image folder, rtsp://[user:pw@]host[:port]/path, /dev/videoN"
    )
    stream_id: str = Field(
        "cam1",
        description="name of the stream in events and topics",
        # 1..64 of [A-Za-z0-9_.-] but not . or .. (clips/STREAM must stay inside clips/);
        # spelt without look-ahead, which pydantic's regex engine lacks
        pattern=r"^(?:[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}|\.[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,62}"
        r"|\.\.[A-Za-z0-9_.\-]{1,62})$",
    )
    decoder: Literal["auto", "software", "cuda"] = Field(
        "auto", description="auto: CUDA (PyAV hwaccel) when a CUDA device is present"
    )
    fps: float | None = Field(
        None, gt=0, le=1000, description="image folders: frames/s (default 10); USB: ask the driver"
    )
    realtime: bool | None = Field(
        None, description="pace files/folders at their fps (default: in live mode only)"
    )
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="camera: connect timeout, s")
    read_timeout_s: float = Field(
        5.0, gt=0, le=300, description="camera: no packet this long = silent -> reconnect"
    )
    reconnect_base_s: float = Field(0.5, gt=0, description="camera: first retry delay, s")
    reconnect_max_s: float = Field(30.0, gt=0, description="camera: retry delay cap, s")
    reconnect_max_attempts: int | None = Field(
        None, ge=1, description="camera: give up after this many failures in a row (None: never)"
    )
    min_restart_interval_s: float = Field(
        1.0, ge=0, description="camera: at least this long between two connection attempts"
    )
    stable_s: float = Field(
        10.0, gt=0, description="camera: a session this long resets the attempt count"
    )
    loop: bool = Field(
        False,
        description="files: start over at the end, forever, with pts still increasing (a "
        "stand-in camera for demos and soak tests)",
    )
    max_pixels: int | None = Field(
        8192 * 4320,
        ge=1,
        description="refuse frames larger than this many pixels (width x height; default: DCI "
        "8K passes, 8192x8192 not) before any buffer is sized; null: no cap",
    )


class DetectConfig(Strict):
    model: str = Field(
        "auto",
        description="detector in the weights registry, or auto: the light one on a CPU, the "
        "stronger one on CUDA (vigil says which and why)",
    )
    weights: str = Field(
        "auto",
        description="auto (cached, pack, else download on first use) | pretrained | none "
        "(random, on purpose) | path to a .pth file",
    )
    score_threshold: float = Field(0.5, ge=0.0, le=1.0, description="drop boxes below this score")
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="class-aware NMS IoU threshold")
    classes: list[str] | None = Field(None, description="keep only these class names (None: all)")
    input_size: int | None = Field(None, ge=32, le=4096, description="detector's shorter side, px")
    max_detections: int = Field(100, ge=1, le=1000, description="boxes kept per frame")
    stride: int = Field(1, ge=1, le=1000, description="detect every Nth frame of a stream")
    batch_size: int = Field(4, ge=1, le=64, description="frames per inference batch")
    batch_wait_ms: float = Field(5.0, ge=0, le=1000, description="how long to collect a batch")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    seed: int = Field(0, description="seed of random-init weights (identical across runs)")


class PeopleConfig(Strict):
    enabled: bool = Field(True, description="track people and emit track.start / track.end")
    person_class: str = Field("person", description="detector class name that is a person")
    forecast: bool = Field(True, description="forecast actions from pose sequences (needs poses)")
    forecaster_weights: str = Field("auto", description="auto (shipped) | none | path to .pt")
    horizons_s: list[float] = Field([0.5, 1.0], description="forecast horizons, seconds ahead")
    min_confidence: float = Field(0.6, ge=0, le=1, description="min p of an action.forecast event")
    min_persist: int = Field(2, ge=1, description="consecutive agreeing forecasts before an event")
    track_high_thresh: float = Field(0.5, ge=0, le=1, description="tracker: confident detections")
    track_low_thresh: float = Field(0.1, ge=0, le=1, description="tracker: second-pass detections")
    track_max_age: int = Field(30, ge=1, description="frames a lost track is kept before it ends")


class OutputConfig(Strict):
    dir: Path = Field(Path("out"), description="output folder")
    video: bool = Field(True, description="write DIR/annotated.mp4")
    events_file: bool = Field(True, description="write DIR/events.jsonl")
    timings: bool = Field(False, description="write DIR/timings.jsonl: per-frame stage times")
    detections: bool = Field(
        False, description="write DIR/detections.jsonl: per-frame boxes, tracks, poses, forecasts"
    )
    video_codec: str = Field("libx264", description="PyAV encoder for annotated.mp4")
    video_crf: int = Field(23, ge=0, le=51, description="x264 quality (lower is better)")
    clips_max_age_s: float | None = Field(
        7 * 86400.0, gt=0, description="alert clips older than this are deleted (None: kept)"
    )
    clips_max_mb: float | None = Field(
        1024.0, gt=0, description="oldest alert clips deleted beyond this total size, MiB"
    )
    clip_buffer_mb: float = Field(
        512.0, gt=0, description="per-stream pre-roll buffer of annotated frames, MiB (cap)"
    )
    existing: Literal["keep", "overwrite"] = Field(
        "keep",
        description="a previous run's outputs in DIR: keep (moved to DIR/previous/N/) or "
        "overwrite (deleted; --overwrite); the journal always continues",
    )

class ArchiveConfig(Strict):
    """Batch archives: ``vigil process`` with several inputs (see ``pipeline/archive/``)."""

    workers: int = Field(1, ge=1, le=256, description="files processed at once (processes/actors)")
    engine: Literal["local", "ray"] = Field(
        "local", description="local: worker processes on this machine; ray: Ray actors"
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join, e.g. ray://head:10001 (None: start a local one)"
    )
    ray_cpus_per_worker: float = Field(
        1.0, gt=0, description="CPUs each Ray actor reserves (also its torch threads)"
    )
    extensions: list[str] = Field(
        ["mp4", "mkv", "avi", "mov", "ts", "webm", "m4v", "mpg", "mpeg"],
        description="file extensions a folder or glob input is scanned for",
    )


class ModelStageConfig(Strict):
    """Fields every optional model stage (segment, pose) has, in this order; each stage's
    section sets its own ``enabled`` and ``model`` defaults and adds its fields after these."""

    enabled: bool = Field(False, description="run this stage")
    model: str = Field("", description="the stage's model")
    weights: str = Field("auto", description="auto | pretrained | none (random) | path")


class SegmentConfig(ModelStageConfig):
    """Segmentation stage (``models/segmentation.py``); off by default."""

    enabled: bool = Field(False, description="run segmentation (masks on every result)")
    model: str = Field(
        "lraspp_mobilenet_v3_large",
        description="lraspp_mobilenet_v3_large | deeplabv3_mobilenet_v3_large | fcn_resnet50 "
        "(semantic) | maskrcnn_resnet50_fpn_v2 (instance)",
    )
    input_size: int | None = Field(None, ge=32, le=4096, description="shorter side, px")
    stride: int = Field(1, ge=1, le=1000, description="run every Nth frame per stream, reuse")
    score_threshold: float = Field(0.5, ge=0, le=1, description="instance: min instance score")
    mask_threshold: float = Field(0.5, gt=0, lt=1, description="instance: mask probability cut")
    seed: int = Field(0, description="seed of random-init weights")


class PoseConfig(ModelStageConfig):
    """Pose stage (``models/pose.py``); off by default (``simnet`` gives poses itself)."""

    enabled: bool = Field(False, description="run a pose model (replaces the detector's poses)")
    model: str = Field(
        "shufflenetv2k16",
        description="openpifpaf | shufflenetv2k16 | shufflenetv2k30 | resnet50 (OpenPifPaf) | "
        "keypointrcnn_resnet50_fpn",
    )
    fallback: str | None = Field(
        "keypointrcnn_resnet50_fpn",
        description="model when OpenPifPaf is unavailable (None: error)",
    )
    input_size: int | None = Field(
        None, ge=32, le=4096, description="OpenPifPaf: longer side; Keypoint R-CNN: shorter, px"
    )
    stride: int = Field(1, ge=1, le=1000, description="run every Nth frame per stream, reuse")
    score_threshold: float = Field(0.1, ge=0, le=1, description="drop poses below this score")
    max_poses: int = Field(50, ge=1, le=1000, description="poses kept per frame")
    seed: int = Field(0, description="seed of random-init weights")


class BackendConfig(Strict):
    """How the frame models run (``models/runtime/``), for every stage."""

    name: Literal["eager", "compile", "onnxruntime", "tensorrt"] = Field(
        "eager", description="eager | compile (torch.compile) | onnxruntime | tensorrt"
    )
    precision: Literal["fp32", "fp16"] = Field("fp32", description="fp16: CUDA only")
    channels_last: bool = Field(False, description="NHWC convolutions (CUDA)")
    cuda_graphs: bool = Field(False, description="replay CUDA graphs for static shapes (CUDA)")
    compile_mode: str | None = Field(None, description="torch.compile mode (None: automatic)")
    cache_dir: Path | None = Field(
        None, description="ONNX files and TensorRT engines (None: $VIGIL_CACHE or ~/.cache/vigil)"
    )
    decode_threads: int = Field(
        0, ge=0, le=64,
        description="OpenPifPaf: CPU decoder threads overlapping the network (0: inline)",
    )
