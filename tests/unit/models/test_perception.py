"""Tests for stage composition: build_perceiver_from_config with any subset of detect /
segment / pose, per-stage strides, alignment of poses and masks to detections, and the plain
detector path left exactly as it was."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.catalog import check_model, known_models
from models.perception.base import StrideSchedule
from models.perception.build import DetectorPerceiver, build_perceiver
from models.perception.build import build_perceiver_from_config as build_from_typed_config
from models.perception.composite import CompositePerceiver, align_poses
from models.results import Detections, Masks, Poses
from pipeline.config import VigilConfig
from stream.sim.render import render_frame
from stream.sim.scenes import make_scene

torch.set_num_threads(1)


def build_perceiver_from_config(sections: dict):
    """The perceiver for a config given as its sections (validated into the typed config)."""
    return build_from_typed_config(VigilConfig.model_validate(sections))

DETECT = {"model": "fasterrcnn_mobilenet_v3_large_320_fpn", "weights": "none", "device": "cpu",
          "score_threshold": 0.0, "input_size": 96, "max_detections": 5}  # fmt: skip
SEGMENT = {"enabled": True, "model": "lraspp_mobilenet_v3_large", "weights": "none",
           "input_size": 48, "stride": 3}  # fmt: skip
POSE = {"enabled": True, "model": "keypointrcnn_resnet50_fpn", "weights": "none",
        "input_size": 64, "score_threshold": 0.0, "max_poses": 3}  # fmt: skip


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    scene = make_scene(2, width=160, height=96)
    return [render_frame(scene, i)[0] for i in range(4)]


def _well_formed(outputs, frames) -> None:
    assert len(outputs) == len(frames)
    for (det, poses, masks), f in zip(outputs, frames):
        assert isinstance(det, Detections) and isinstance(poses, Poses)
        assert isinstance(masks, Masks)
        assert poses.keypoints.shape[1:] == (17, 3)
        if masks.semantic is not None:
            assert masks.semantic.shape == f.shape[:2]


def test_detect_only_is_the_plain_perceiver(frames) -> None:
    p = build_perceiver_from_config({"detect": DETECT})
    assert type(p) is DetectorPerceiver  # no wrapper: as fast as before
    _well_formed(p(frames[:2]), frames[:2])


def test_detect_segment_pose_with_strides(frames) -> None:
    p = build_perceiver_from_config(
        {"detect": DETECT, "segment": SEGMENT, "pose": POSE, "people": {"person_class": "person"}}
    )
    assert isinstance(p, CompositePerceiver) and p.class_names[1] == "person"
    out = p(frames, stream_ids=["cam1"] * 4)
    _well_formed(out, frames)
    assert p.segmenter.schedule.runs == 2 and out[1][2] is out[0][2]  # frames 0 and 3
    assert p.pose.schedule.runs == 4 and all(len(o[1]) <= 3 for o in out)
    assert "lraspp" in p.description and "keypointrcnn" in p.description


def test_pose_only_gives_person_boxes(frames) -> None:
    p = build_perceiver_from_config({"detect": {"model": "none"}, "pose": POSE})
    assert p.class_names == ("__background__", "person")
    for det, poses, masks in p(frames[:1]):
        assert len(det) == len(poses) > 0 and np.all(det.class_id == 1)
        assert masks.semantic is None and masks.instance is None


def test_segment_only_gives_masks_and_no_boxes(frames) -> None:
    p = build_perceiver_from_config({"detect": {"model": "none"}, "segment": SEGMENT})
    ((det, poses, masks),) = p(frames[:1])
    assert len(det) == 0 and len(poses) == 0 and masks.semantic.shape == (96, 160)


def test_no_stage_is_an_error() -> None:
    with pytest.raises(ValueError, match="no stage enabled"):
        build_perceiver_from_config({"detect": {"model": "none"}})


def test_detect_stride_reuses_detections(frames) -> None:
    p = build_perceiver_from_config({"detect": {**DETECT, "stride": 2}})
    out = p(frames, stream_ids=["a", "b", "a", "b"])
    assert p.detect_schedule.runs == 2 and out[2][0] is out[0][0] and out[3][0] is out[1][0]


def test_align_poses_follows_person_detections() -> None:
    kp = np.zeros((3, 17, 3), np.float32)
    poses = Poses(kp, np.array([0.9, 0.8, 0.7], np.float32))
    boxes = Detections([[0, 0, 10, 10], [50, 50, 60, 60], [100, 0, 110, 10]], [0.9, 0.8, 0.7],
                       [1, 1, 1])  # fmt: skip
    dets = Detections([[49, 50, 60, 61], [0, 0, 30, 30], [100, 0, 110, 10], [0, 0, 10, 11]],
                      [0.9, 0.8, 0.7, 0.6], [1, 3, 1, 1])  # fmt: skip
    out = align_poses(poses, boxes, dets, np.array([1]))
    assert out.score.tolist() == pytest.approx([0.8, 0.7, 0.9])  # persons 0, 2, 3 -> poses 1, 2, 0


def test_stride_schedule_counts_per_stream() -> None:
    s = StrideSchedule(2)
    calls: list[int] = []

    def infer(batch):
        calls.append(len(batch))
        return [object() for _ in batch]

    out = s.run([np.zeros(1)] * 5, ["a", "a", "b", "a", "b"], infer)
    assert calls == [3] and out[1] is out[0] and out[4] is out[2]  # a0, b0, a2 run
    with pytest.raises(ValueError, match="stride must be >= 1"):
        StrideSchedule(0)


def test_existing_entry_points_unchanged() -> None:
    assert "simnet" in known_models() and "fasterrcnn_mobilenet_v3_large_fpn" in known_models()
    check_model("simnet")
    with pytest.raises(Exception, match="detect.model needs one of"):
        check_model("lraspp_mobilenet_v3_large")
    p = build_perceiver(model="ssdlite320_mobilenet_v3_large", weights="none", input_size=64)
    assert type(p) is DetectorPerceiver
