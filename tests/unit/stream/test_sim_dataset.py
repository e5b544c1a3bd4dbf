"""Tests for the sim perception dataset: exact agreement with the synthetic world, masks,
occlusion, COCO output that pycocotools reads back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream.sim.datasets import (
    COCO_CATEGORY_IDS,
    generate,
    render_annotated,
    rle_encode,
    to_canvas,
    write_coco,
)
from stream.sim.render import render_frame
from stream.sim.scenes import make_scene
from stream.sim.world import CLASSES, Scene


@pytest.fixture(scope="module")
def scene() -> Scene:
    return make_scene(seed=11, width=320, height=180, n_people=4, n_objects=3)


def test_render_annotated_matches_render_frame(scene: Scene) -> None:
    for idx in (0, 37, 90):
        frame = render_annotated(scene, idx)
        rgb, gt = render_frame(scene, idx)
        assert np.array_equal(frame.image, rgb)
        assert frame.ids.tolist() == [o["id"] for o in gt["objects"]]
        for obj, box, label, kp in zip(gt["objects"], frame.boxes, frame.labels, frame.keypoints):
            assert CLASSES[label] == obj["class"]
            np.testing.assert_allclose(box, obj["box"])
            if obj["class"] == "person":
                g = np.asarray(obj["keypoints"], np.float32)
                np.testing.assert_allclose(kp[:, :2], g[:, :2], atol=0.01)
                assert ((kp[:, 2] == 2) == (g[:, 2] == 1)).all()


def test_visible_masks_are_disjoint_inside_boxes_and_make_the_person_mask(
    scene: Scene,
) -> None:
    frame = render_annotated(scene, 45)
    assert frame.masks.shape == (len(frame), 180, 320)
    assert frame.masks.sum(axis=0).max() <= 1  # one owner per pixel
    for box, mask in zip(frame.boxes, frame.masks):
        ys, xs = np.nonzero(mask)
        if len(xs):
            assert xs.min() >= box[0] and xs.max() < box[2]
            assert ys.min() >= box[1] and ys.max() < box[3]
    person = frame.labels == 0
    assert np.array_equal(frame.person_mask, frame.masks[person].any(axis=0))
    assert frame.person_mask.sum() > 100


def test_occluder_hides_keypoints_and_mask_but_keeps_the_box(scene: Scene) -> None:
    plain = render_annotated(scene, 10)
    p = int(np.flatnonzero(plain.labels == 0)[0])
    x1, y1, x2, y2 = plain.boxes[p]
    cover = np.array([[x1 - 2, y1 - 2], [x2 + 2, y1 - 2], [x2 + 2, y2 + 2], [x1 - 2, y2 + 2]])
    hidden = render_annotated(scene, 10, occluders=[cover])
    q = int(np.flatnonzero(hidden.ids == plain.ids[p])[0])
    np.testing.assert_allclose(hidden.boxes[q], plain.boxes[p])
    assert hidden.masks[q].sum() == 0
    inside = plain.keypoints[p, :, 2] > 0
    assert (hidden.keypoints[q, inside, 2] == 1).all()  # labelled, occluded


def test_generate_is_deterministic_and_varied() -> None:
    a = list(generate(4, seed=3, frames_per_scene=2))
    b = list(generate(4, seed=3, frames_per_scene=2))
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert all(np.array_equal(x.boxes, y.boxes) for x, y in zip(a, b))
    assert not np.array_equal(a[0].image, list(generate(1, seed=4))[0].image)


def test_to_canvas_identity_scale_shifts_annotations(scene: Scene) -> None:
    frame = render_annotated(scene, 20)
    same = to_canvas(frame, (320, 192))
    assert np.array_equal(same.image[:180], frame.image)
    assert (same.image[180:] == 0).all()
    np.testing.assert_allclose(same.boxes, frame.boxes, atol=1e-4)
    zoomed = to_canvas(frame, (320, 192), zoom=1.5, shift=(-40, -20))
    assert zoomed.image.shape == (192, 320, 3)
    assert (zoomed.boxes[:, 2] <= 320).all() and (zoomed.boxes[:, 0] >= 0).all()
    assert (zoomed.keypoints[:, :, 2][zoomed.keypoints[:, :, 0] >= 320] == 0).all()


def test_rle_roundtrip_with_pycocotools() -> None:
    mask_util = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for shape in ((7, 5), (1, 1), (30, 17)):
        m = rng.random(shape) < 0.4
        rle = rle_encode(m)
        decoded = mask_util.decode(mask_util.frPyObjects(rle, *shape))
        assert np.array_equal(decoded.astype(bool), m)
    assert rle_encode(np.ones((2, 2), bool))["counts"] == [0, 4]


def test_write_coco_loads_in_pycocotools_with_boxes_and_keypoints_in_range(tmp_path) -> None:
    coco_mod = pytest.importorskip("pycocotools.coco")
    frames = list(generate(6, seed=1, frames_per_scene=3))
    path = write_coco(frames, tmp_path)
    coco = coco_mod.COCO(str(path))
    raw = json.loads(path.read_text())
    assert len(coco.getImgIds()) == 6
    assert len(raw["annotations"]) == sum(len(f) for f in frames)
    person = coco.loadCats([COCO_CATEGORY_IDS["person"]])[0]
    assert len(person["keypoints"]) == 17
    assert all(1 <= a <= 17 and 1 <= b <= 17 for a, b in person["skeleton"])
    for ann in coco.loadAnns(coco.getAnnIds()):
        img = coco.loadImgs(ann["image_id"])[0]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and w > 0 and h > 0
        assert x + w <= img["width"] + 1e-3 and y + h <= img["height"] + 1e-3
        assert coco.annToMask(ann).sum() == ann["area"]
        if ann["category_id"] == COCO_CATEGORY_IDS["person"]:
            kp = np.asarray(ann["keypoints"], np.float32).reshape(17, 3)
            labelled = kp[:, 2] > 0
            assert ann["num_keypoints"] == int(labelled.sum())
            assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
            assert (kp[labelled, 0] >= 0).all() and (kp[labelled, 0] < img["width"]).all()
            assert (kp[labelled, 1] >= 0).all() and (kp[labelled, 1] < img["height"]).all()
            assert (kp[~labelled] == 0).all()
    assert (tmp_path / raw["images"][0]["file_name"]).is_file()
