"""Frame transport between processes: pixels in shared memory, credits over ZeroMQ.

The source process owns a :class:`FrameRing` of fixed-size slots in POSIX shared memory. It
writes a frame into a free slot and sends only the slot's address (ring name, slot index,
shape) downstream; the last stage that reads the pixels returns the slot with a credit message.
The ring's size bounds the frames in flight, which is the backpressure of batch mode: when no
slot is free the source waits (polling its stop flag), so nothing is dropped and no queue grows.
"""

from __future__ import annotations

import secrets
from multiprocessing import shared_memory
from typing import Any

import numpy as np


class FrameRing:
    """``slots`` shared-memory slots of ``slot_bytes`` each.

    Create it in the producer (``FrameRing.create``); consumers attach by name
    (``FrameRing.attach``) and must not unlink it.
    """

    def __init__(
        self, shm: shared_memory.SharedMemory, slots: int, slot_bytes: int, owner: bool
    ) -> None:
        self._shm = shm
        self.name = shm.name
        self.slots = slots
        self.slot_bytes = slot_bytes
        self.owner = owner

    @classmethod
    def create(cls, slots: int, slot_bytes: int, prefix: str = "vigil") -> FrameRing:
        if slots < 1 or slot_bytes < 1:
            raise ValueError(f"need slots >= 1 and slot_bytes >= 1, got {slots}, {slot_bytes}")
        name = f"{prefix}-{secrets.token_hex(6)}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=slots * slot_bytes)
        return cls(shm, slots, slot_bytes, owner=True)

    @classmethod
    def attach(cls, name: str, slots: int, slot_bytes: int) -> FrameRing:
        # Stages are spawned children sharing the supervisor's resource tracker, so attaching
        # (which registers the name again) neither leaks nor unlinks the producer's memory.
        shm = shared_memory.SharedMemory(name=name, create=False)
        return cls(shm, slots, slot_bytes, owner=False)

    def view(self, slot: int, shape: tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        """A numpy view (no copy) of ``slot`` holding an array of ``shape``."""
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} outside ring of {self.slots}")
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes > self.slot_bytes:
            raise ValueError(f"array of {nbytes} bytes does not fit a {self.slot_bytes}-byte slot")
        return np.ndarray(shape, dtype=dtype, buffer=self._shm.buf, offset=slot * self.slot_bytes)

    def write(self, slot: int, array: np.ndarray) -> None:
        self.view(slot, array.shape, array.dtype)[...] = array

    def address(self, slot: int, shape: tuple[int, ...]) -> dict[str, Any]:
        """The small, JSON-able description of a frame in this ring, sent downstream."""
        return {
            "ring": self.name,
            "slots": self.slots,
            "slot_bytes": self.slot_bytes,
            "slot": slot,
            "shape": list(shape),
        }

    def close(self) -> None:
        try:
            self._shm.close()
        except BufferError:  # a view is still alive; the OS frees it at exit
            pass
        if self.owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass


class RingReader:
    """Consumer side: attaches to rings by name on first use and returns frame views."""

    def __init__(self) -> None:
        self._rings: dict[str, FrameRing] = {}

    def view(self, address: dict[str, Any]) -> np.ndarray:
        ring = self._rings.get(address["ring"])
        if ring is None:
            ring = FrameRing.attach(address["ring"], address["slots"], address["slot_bytes"])
            self._rings[address["ring"]] = ring
        return ring.view(address["slot"], tuple(address["shape"]))

    def close(self) -> None:
        for ring in self._rings.values():
            ring.close()
        self._rings.clear()
