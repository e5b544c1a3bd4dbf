"""Wire format for headers plus numpy arrays over ZeroMQ, without pickle.

A message is multipart: ``[header_json, buf_0, buf_1, ...]``. The header carries the
caller's JSON fields under ``"h"`` and, under ``"a"``, one ``[name, dtype, shape]`` entry per
array in the order of the following frames. Arrays go out zero-copy (``copy=False``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import zmq


def encode(header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> list[Any]:
    """Return the frames of one message: a JSON header, then each array's raw buffer."""
    arrays = arrays or {}
    specs, buffers = [], []
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        specs.append([name, arr.dtype.str, list(arr.shape)])
        buffers.append(memoryview(arr).cast("B") if arr.size else b"")
    return [json.dumps({"h": header, "a": specs}, separators=(",", ":")).encode(), *buffers]


def decode(frames: list[Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of :func:`encode`; raises ValueError on a malformed message."""
    if not frames:
        raise ValueError("empty message")
    try:
        meta = json.loads(bytes(frames[0]))
        header, specs = meta["h"], meta["a"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed message header: {exc}") from None
    if len(specs) != len(frames) - 1:
        raise ValueError(f"header names {len(specs)} arrays but {len(frames) - 1} frames follow")
    arrays = {}
    for (name, dtype, shape), frame in zip(specs, frames[1:]):
        buf = frame.buffer if isinstance(frame, zmq.Frame) else frame
        arrays[name] = np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape)
    return header, arrays


def send(
    sock: zmq.Socket,
    header: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
    flags: int = 0,
) -> None:
    sock.send_multipart(encode(header, arrays), flags=flags, copy=False)


def recv(sock: zmq.Socket, flags: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    return decode(sock.recv_multipart(flags=flags, copy=False))
