from __future__ import annotations

import numpy as np
import pytest

from models.results import ActionForecast, Detections, FrameResult, Masks, Poses


def make_detections(n: int = 3, with_tracks: bool = False) -> Detections:
    xy = np.arange(n, dtype=np.float32)[:, None] * 10
    xyxy = np.hstack([xy, xy, xy + 5, xy + 8])
    return Detections(
        xyxy,
        np.linspace(0.9, 0.5, n),
        np.arange(n) % 2,
        np.arange(n) + 100 if with_tracks else None,
    )


def test_detections_validate_shapes_with_a_message_naming_the_shape():
    with pytest.raises(ValueError, match=r"xyxy must have shape \(n, 4\)"):
        Detections(np.zeros((2, 3)), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="score has 1 rows but there are 2"):
        Detections(np.zeros((2, 4)), np.zeros(1), np.zeros(2))
    with pytest.raises(ValueError, match="x1 <= x2"):
        Detections([[10, 0, 5, 5]], [0.5], [0])


def test_detections_coerce_dtypes_and_mask_indexing_returns_new_object():
    det = make_detections(3)
    assert det.xyxy.dtype == np.float32 and det.class_id.dtype == np.int64
    sub = det[det.class_id == 0]
    assert len(sub) == 2 and sub is not det
    np.testing.assert_array_equal(sub.xyxy, det.xyxy[[0, 2]])
    assert len(det[1]) == 1 and det[1].xyxy.shape == (1, 4)
    assert len(det[np.zeros(3, bool)]) == 0


def test_detections_empty_merge_and_area():
    assert len(Detections.empty()) == 0
    merged = Detections.merge([make_detections(2), Detections.empty(), make_detections(3)])
    assert len(merged) == 5
    assert np.allclose(make_detections(1).area, [40.0])
    with pytest.raises(ValueError, match="with and without track_id"):
        Detections.merge([make_detections(1, True), make_detections(1)])


def test_poses_shape_and_default_score():
    kp = np.random.default_rng(0).random((2, 17, 3)).astype(np.float32)
    poses = Poses(kp)
    assert poses.score.shape == (2,) and np.allclose(poses.score, kp[:, :, 2].mean(1))
    with pytest.raises(ValueError, match=r"\(n, 17, 3\)"):
        Poses(np.zeros((1, 16, 3)))
    assert len(Poses.merge([poses, Poses.empty(), poses[0]])) == 3


def test_masks_instance_round_trip_is_bit_packed():
    inst = np.random.default_rng(1).random((3, 7, 9)) > 0.5
    masks = Masks(semantic=np.zeros((7, 9), np.uint8), instance=inst)
    arrays = masks.to_wire()
    assert arrays["mask.instance_bits"].nbytes == (3 * 7 * 9 + 7) // 8
    back = Masks.from_wire(arrays)
    np.testing.assert_array_equal(back.instance, inst)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        Masks(semantic=np.zeros((2, 2, 2)))


def test_action_forecast_checks_vocabulary():
    f = ActionForecast(7, "fall", 1.0, {"fall": 0.8, "walk": 0.2})
    assert f.p == 0.8 and ActionForecast.from_json(f.to_json()) == f
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ActionForecast(7, "jump", 1.0, {"fall": 1.0})


def test_frame_result_wire_round_trip_keeps_everything():
    res = FrameResult(
        "cam1",
        5,
        0.5,
        1_700_000_000.5,
        64,
        48,
        detections=make_detections(2, with_tracks=True),
        poses=Poses(np.ones((1, 17, 3)), track_id=[3]),
        forecasts=[ActionForecast(3, "wave", 0.5, {"wave": 1.0})],
        class_names=("person", "car"),
        stage_ts={"decode": 1.0},
    )
    header, arrays = res.to_wire()
    back = FrameResult.from_wire(header, arrays)
    assert (
        back.stream_id == "cam1" and back.frame_idx == 5 and back.class_names == ("person", "car")
    )
    np.testing.assert_array_equal(back.detections.track_id, [100, 101])
    np.testing.assert_array_equal(back.poses.track_id, [3])
    assert (
        back.forecasts == res.forecasts
        and back.class_name(1) == "car"
        and back.class_name(9) == "9"
    )
    with pytest.raises(ValueError, match="frame size"):
        FrameResult("cam1", 0, 0.0, 0.0, 0, 10)
