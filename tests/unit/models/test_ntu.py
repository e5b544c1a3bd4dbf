"""NTU RGB+D ``.skeleton`` reader: parses the real format, maps to COCO-17, rejects bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.people.ntu import (
    FACE_CONFIDENCE,
    NTU_TO_VIGIL,
    NtuFormatError,
    kinect25_to_coco17,
    parse_name,
    read_skeleton,
)


def _joint_line(j: int, frame: int, body: int, state: int = 2) -> str:
    # x y z depthX depthY colorX colorY orientationW..Z trackingState; colour x/y encode j, frame
    color_x = 100.0 + 10 * j + frame + 1000 * body
    color_y = 200.0 + 5 * j + frame
    return f"0.1 0.2 3.5 250.1 200.2 {color_x} {color_y} 0.5 0.5 0.5 0.5 {state}"


def _body_block(body_id: str, frame: int, body: int, states: dict[int, int] | None = None) -> str:
    info = f"{body_id} 0 1 1 1 1 0 0.01 -0.02 2"
    joints = [_joint_line(j, frame, body, (states or {}).get(j, 2)) for j in range(25)]
    return "\n".join([info, "25", *joints])


def write_skeleton(path: Path, bodies_per_frame: list[int]) -> Path:
    lines = [str(len(bodies_per_frame))]
    for f, nb in enumerate(bodies_per_frame):
        lines.append(str(nb))
        for b in range(nb):
            states = {6: 1, 10: 0} if b == 0 else None  # inferred left wrist, lost right wrist
            lines.append(_body_block(f"7205759403793{b}101", f, b, states))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parses_real_format_and_maps_to_coco(tmp_path: Path) -> None:
    path = write_skeleton(tmp_path / "S001C002P003R001A043.skeleton", [1, 2, 0, 1])
    sk = read_skeleton(path)
    assert sk.n_frames == 4
    assert (sk.setup, sk.camera, sk.performer, sk.replication, sk.action_id) == (1, 2, 3, 1, 43)
    assert sk.action_name == "falling down" and sk.vigil_action == "fall"
    assert set(sk.bodies) == {"72057594037930101", "72057594037931101"}
    main = sk.bodies["72057594037930101"]
    assert main.shape == (4, 17, 3)
    # left shoulder (COCO 5) = Kinect 4; right knee (COCO 14) = Kinect 17; colour pixels used.
    np.testing.assert_allclose(main[1, 5], [100 + 40 + 1, 200 + 20 + 1, 1.0])
    np.testing.assert_allclose(main[3, 14, :2], [100 + 170 + 3, 200 + 85 + 3])
    assert main[0, 9, 2] == 0.5  # left wrist inferred
    assert main[0, 10, 2] == 0.0  # right wrist not tracked
    assert np.all(main[2, :, 2] == 0)  # no body in frame 2
    assert np.all(main[0, :5, 2] == pytest.approx(FACE_CONFIDENCE))
    second = sk.bodies["72057594037931101"]
    assert np.all(second[[0, 2, 3], :, 2] == 0) and second[1, 5, 2] == 1.0
    np.testing.assert_array_equal(sk.primary(), main)  # present in more frames
    np.testing.assert_allclose(sk.times, [0, 1 / 30, 2 / 30, 3 / 30])


def test_face_points_approximated_from_head_and_neck() -> None:
    joints = np.zeros((25, 3), np.float32)
    joints[:, 2] = 1.0
    joints[3, :2] = (100, 50)  # head
    joints[2, :2] = (100, 80)  # neck
    joints[4, :2] = (120, 90)  # left shoulder (subject's left = image right, facing camera)
    joints[8, :2] = (80, 90)  # right shoulder
    coco = kinect25_to_coco17(joints)
    assert coco[0, 1] < 50  # nose above the head joint
    assert coco[1, 0] > 100 > coco[2, 0]  # left eye on the left shoulder's side
    assert coco[3, 0] > coco[1, 0] and coco[4, 0] < coco[2, 0]  # ears outside the eyes
    assert np.all(coco[:5, 2] == pytest.approx(FACE_CONFIDENCE))


def test_parse_name_and_mapping() -> None:
    assert parse_name("S017C003P020R002A060.skeleton") == (17, 3, 20, 2, 60)
    assert parse_name("clip.skeleton") is None
    assert NTU_TO_VIGIL[43] == "fall" and NTU_TO_VIGIL[8] == "sit_down"
    assert NTU_TO_VIGIL[9] == "stand_up" and NTU_TO_VIGIL[23] == "wave"


def test_malformed_joint_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_skeleton(tmp_path / "S001C001P001R001A008.skeleton", [1, 1])
    lines = path.read_text().splitlines()
    # frame 1 starts at line 2 + 1 + 1 + 1 + 25 = 30 (body count); its joint 3 is line 34.
    bad = 1 + (1 + 1 + 1 + 25) + 1 + 1 + 1 + 3  # 0-based index of frame 1, joint 3
    lines[bad] = "0.1 0.2 0.3"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(NtuFormatError) as exc:
        read_skeleton(path)
    msg = str(exc.value)
    assert path.name in msg and f":{bad + 1}:" in msg and "joint 3 of frame 1" in msg
    assert exc.value.line == bad + 1


def test_truncated_and_non_numeric_files_rejected(tmp_path: Path) -> None:
    path = write_skeleton(tmp_path / "S001C001P001R001A009.skeleton", [1, 1])
    text = path.read_text().splitlines()
    path.write_text("\n".join(text[:-5]) + "\n")
    with pytest.raises(NtuFormatError, match="unexpected end of file"):
        read_skeleton(path)
    text[0] = "two"
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(NtuFormatError, match=r":1: non-numeric value in the frame count"):
        read_skeleton(path)
    text[0] = "2"
    text[3] = "24"  # joint count
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(NtuFormatError, match=r":4: expected 25 joints, got 24"):
        read_skeleton(path)
