"""Reader of NTU RGB+D ``.skeleton`` files, mapped to COCO-17 2D keypoints.

The published text format (Shahroudy et al., CVPR 2016; same for NTU RGB+D 120)::

    <frame count>
    per frame:
      <body count>
      per body:
        <bodyID clippedEdges handLeftConfidence handLeftState handRightConfidence
         handRightState isRestricted leanX leanY trackingState>           (10 values)
        <joint count>                                                    (25)
        per joint:
          <x y z depthX depthY colorX colorY orientationW orientationX orientationY
           orientationZ trackingState>                                   (12 values)

Joints are Kinect v2's 25 (0-based here): 0 spine base, 1 spine mid, 2 neck, 3 head,
4-7 left shoulder/elbow/wrist/hand, 8-11 right shoulder/elbow/wrist/hand, 12-15 left
hip/knee/ankle/foot, 16-19 right hip/knee/ankle/foot, 20 spine shoulder, 21-22 left hand
tip/thumb, 23-24 right hand tip/thumb. "Left" is the subject's left, as in COCO.

We use the 1920x1080 colour-image coordinates (``colorX``, ``colorY``). Body joints map one to
one; COCO's face points have no Kinect counterpart and are *approximated* from the head and
neck (see :func:`kinect25_to_coco17`) with confidence :data:`FACE_CONFIDENCE` (below the usual
0.3 visibility threshold, so downstream code treats them as filled, not observed). Kinect's
per-joint tracking state gives the confidence: tracked 1.0, inferred 0.5, not tracked 0.0.

The file name ``SsssCcccPpppRrrrAaaa.skeleton`` carries setup, camera, performer, replication
and action id (``A043`` = falling); :data:`NTU_TO_VIGIL` maps the ids that have a counterpart
in vigil's action vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "NtuFormatError",
    "NtuSkeleton",
    "NTU_ACTIONS",
    "NTU_TO_VIGIL",
    "NTU_FPS",
    "FACE_CONFIDENCE",
    "read_skeleton",
    "parse_name",
    "kinect25_to_coco17",
]

NTU_FPS = 30.0  # Kinect v2 frame rate of the NTU recordings
FACE_CONFIDENCE = 0.2  # confidence given to the approximated nose/eyes/ears

#: NTU RGB+D 60 action names by id (1-based, as in the file names).
NTU_ACTIONS: dict[int, str] = dict(
    enumerate(
        (
            "drink water",
            "eat meal",
            "brush teeth",
            "brush hair",
            "drop",
            "pick up",
            "throw",
            "sit down",
            "stand up",
            "clapping",
            "reading",
            "writing",
            "tear up paper",
            "put on jacket",
            "take off jacket",
            "put on a shoe",
            "take off a shoe",
            "put on glasses",
            "take off glasses",
            "put on a hat/cap",
            "take off a hat/cap",
            "cheer up",
            "hand waving",
            "kicking something",
            "reach into pocket",
            "hopping",
            "jump up",
            "phone call",
            "play with phone/tablet",
            "type on a keyboard",
            "point to something",
            "taking a selfie",
            "check time (from watch)",
            "rub two hands",
            "nod head/bow",
            "shake head",
            "wipe face",
            "salute",
            "put palms together",
            "cross hands in front",
            "sneeze/cough",
            "staggering",
            "falling down",
            "headache",
            "chest pain",
            "back pain",
            "neck pain",
            "nausea/vomiting",
            "fan self",
            "punch/slap",
            "kicking",
            "pushing",
            "pat on back",
            "point finger",
            "hugging",
            "giving object",
            "touch pocket",
            "shaking hands",
            "walking towards",
            "walking apart",
        ),
        start=1,
    )
)

#: NTU action id -> vigil action, where vigil's vocabulary has one.
NTU_TO_VIGIL: dict[int, str] = {
    8: "sit_down",  # sit down
    9: "stand_up",  # stand up
    23: "wave",  # hand waving
    43: "fall",  # falling down
    59: "walk",  # walking towards
    60: "walk",  # walking apart
}

_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")

# COCO-17 index -> Kinect v2 joint index for the joints that exist in both.
_BODY_MAP: dict[int, int] = {
    5: 4,
    6: 8,
    7: 5,
    8: 9,
    9: 6,
    10: 10,  # shoulders, elbows, wrists
    11: 12,
    12: 16,
    13: 13,
    14: 17,
    15: 14,
    16: 18,  # hips, knees, ankles
}
_TRACKING_CONF = np.array([0.0, 0.5, 1.0], np.float32)  # Kinect: not tracked, inferred, tracked


class NtuFormatError(ValueError):
    """A ``.skeleton`` file that does not follow the format; names the file and the line."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        super().__init__(f"{self.path}:{line}: {message}")


@dataclass
class NtuSkeleton:
    """One parsed ``.skeleton`` file.

    Attributes:
        path: the file read.
        n_frames: frames in the recording (30 fps).
        bodies: ``{body_id: (n_frames, 17, 3) float32}`` COCO-17 x, y in colour-image pixels
            (1920x1080) and confidence; frames where the body is absent have confidence 0.
        setup, camera, performer, replication, action_id: from the file name (None if the name
            does not follow the convention).
    """

    path: str
    n_frames: int
    bodies: dict[str, np.ndarray] = field(default_factory=dict)
    setup: int | None = None
    camera: int | None = None
    performer: int | None = None
    replication: int | None = None
    action_id: int | None = None

    @property
    def action_name(self) -> str | None:
        """NTU's name of the action (e.g. "falling down")."""
        return NTU_ACTIONS.get(self.action_id) if self.action_id is not None else None

    @property
    def vigil_action(self) -> str | None:
        """The vigil vocabulary's action for this recording, or None if it has none."""
        return NTU_TO_VIGIL.get(self.action_id) if self.action_id is not None else None

    @property
    def times(self) -> np.ndarray:
        """``(n_frames,)`` frame times in seconds."""
        return np.arange(self.n_frames, dtype=np.float64) / NTU_FPS

    def primary(self) -> np.ndarray | None:
        """The main actor's ``(n_frames, 17, 3)`` keypoints: the body seen in most frames, ties
        broken by the larger motion (sum of per-joint position variance); None if no body."""
        if not self.bodies:
            return None

        def key(item: tuple[str, np.ndarray]) -> tuple[int, float]:
            kp = item[1]
            present = kp[:, :, 2].max(axis=1) > 0
            motion = float(kp[present, :, :2].var(axis=0).sum()) if present.any() else 0.0
            return int(present.sum()), motion

        return max(self.bodies.items(), key=key)[1]


def parse_name(path: str | Path) -> tuple[int, int, int, int, int] | None:
    """``(setup, camera, performer, replication, action)`` from an NTU file name, or None."""
    m = _NAME_RE.search(Path(path).name)
    return tuple(int(g) for g in m.groups()) if m else None  # type: ignore[return-value]


def kinect25_to_coco17(joints: np.ndarray) -> np.ndarray:
    """Map Kinect v2 joints to COCO-17.

    Args:
        joints: ``(25, 3)`` x, y colour-image pixels and confidence per Kinect joint.

    Returns:
        ``(17, 3) float32`` COCO-17 x, y, confidence. Face points are approximations: with
        ``up = head - neck`` and ``side = (left shoulder - right shoulder) / 2``, nose = head +
        0.1 up, eyes = head + 0.25 up -/+ 0.2 side, ears = head + 0.1 up -/+ 0.45 side (the
        subject's left eye/ear on the side of the left shoulder). Their confidence is
        :data:`FACE_CONFIDENCE` times the lower of the head and neck confidences.
    """
    joints = np.asarray(joints, np.float32).reshape(25, 3)
    out = np.zeros((17, 3), np.float32)
    for coco, kin in _BODY_MAP.items():
        out[coco] = joints[kin]
    head, neck = joints[3, :2], joints[2, :2]
    up = head - neck
    side = (joints[4, :2] - joints[8, :2]) / 2
    conf = FACE_CONFIDENCE * min(joints[3, 2], joints[2, 2])
    face = {
        0: head + 0.1 * up,
        1: head + 0.25 * up + 0.2 * side,
        2: head + 0.25 * up - 0.2 * side,
        3: head + 0.1 * up + 0.45 * side,
        4: head + 0.1 * up - 0.45 * side,
    }
    for coco, xy in face.items():
        out[coco, :2] = xy
        out[coco, 2] = conf
    return out


def read_skeleton(path: str | Path) -> NtuSkeleton:
    """Parse one ``.skeleton`` file (see the module docstring for the format).

    Raises:
        NtuFormatError: with the file name and 1-based line number of the first problem
            (missing lines, wrong value counts, non-numeric values, a joint count other than 25).
        OSError: if the file cannot be read.
    """
    path = Path(path)
    lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    pos = 0

    def next_values(expected: int, what: str) -> list[float]:
        nonlocal pos
        while pos < len(lines) and not lines[pos].strip():
            pos += 1  # tolerate blank lines (some copies of the data set end with one)
        if pos >= len(lines):
            raise NtuFormatError(path, pos + 1, f"unexpected end of file, expected {what}")
        parts = lines[pos].split()
        pos += 1
        if len(parts) != expected:
            raise NtuFormatError(
                path, pos, f"expected {expected} value(s) for {what}, got {len(parts)}"
            )
        try:
            return [float(p) for p in parts]
        except ValueError as exc:
            raise NtuFormatError(path, pos, f"non-numeric value in {what}: {exc}") from None

    def next_count(what: str, limit: int) -> int:
        (value,) = next_values(1, what)
        if value != int(value) or not 0 <= value <= limit:
            raise NtuFormatError(
                path, pos, f"{what} must be an integer in [0, {limit}], got {value:g}"
            )
        return int(value)

    n_frames = next_count("the frame count", 100_000)
    per_body: dict[str, dict[int, np.ndarray]] = {}
    for f in range(n_frames):
        n_bodies = next_count(f"the body count of frame {f}", 16)
        for _ in range(n_bodies):
            while pos < len(lines) and not lines[pos].strip():
                pos += 1
            body_line = pos + 1
            info = lines[pos].split() if pos < len(lines) else []
            next_values(10, f"the body info of frame {f}")
            body_id = info[0]
            n_joints = next_count(f"the joint count of frame {f}", 25)
            if n_joints != 25:
                raise NtuFormatError(path, pos, f"expected 25 joints, got {n_joints}")
            joints = np.zeros((25, 3), np.float32)
            for j in range(25):
                vals = next_values(12, f"joint {j} of frame {f}")
                state = int(vals[11])
                if state not in (0, 1, 2):
                    raise NtuFormatError(
                        path, pos, f"joint tracking state must be 0, 1 or 2, got {vals[11]:g}"
                    )
                joints[j] = (vals[5], vals[6], _TRACKING_CONF[state])
            if not np.all(np.isfinite(joints)):
                raise NtuFormatError(path, body_line, "non-finite joint coordinates")
            per_body.setdefault(body_id, {})[f] = kinect25_to_coco17(joints)
    while pos < len(lines) and not lines[pos].strip():
        pos += 1
    if pos < len(lines):
        raise NtuFormatError(path, pos + 1, f"trailing data after {n_frames} frames")

    bodies: dict[str, np.ndarray] = {}
    for body_id, frames in per_body.items():
        kp = np.zeros((n_frames, 17, 3), np.float32)
        for f, k in frames.items():
            kp[f] = k
        bodies[body_id] = kp
    name = parse_name(path)
    fields = (
        dict(zip(("setup", "camera", "performer", "replication", "action_id"), name, strict=True))
        if name
        else {}
    )
    return NtuSkeleton(str(path), n_frames, bodies, **fields)
