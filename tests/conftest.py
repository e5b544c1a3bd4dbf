"""Shared fixtures: synthetic videos made on the fly, free ports, a ZeroMQ context and event
feed, the gpu marker. Helpers that are not fixtures live in ``tests/support``."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests.support.feed import start_publisher
from tests.support.videos import write_moving_box_video

# No test may reach a real model hub: downloads go to a refused port on 127.0.0.1 unless a test
# points VIGIL_WEIGHTS_URL_BASE at its own server. Set here, so child processes inherit it.
os.environ["VIGIL_WEIGHTS_URL_BASE"] = "http://127.0.0.1:9/no-network-in-tests"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not keywords: a folder named gpu
            item.add_marker(skip)


@pytest.fixture
def tiny_video(tmp_path: Path) -> Path:
    return write_moving_box_video(tmp_path / "tiny.mp4")


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    """A ZeroMQ context, destroyed without linger after the test."""
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def feed(tmp_path: Path, ctx: zmq.Context) -> Iterator[tuple[Any, str, str]]:
    """``(publisher, events_endpoint, replay_endpoint)``: an event feed on free local ports."""
    pub, events_ep, replay_ep = start_publisher(tmp_path, ctx)
    yield pub, events_ep, replay_ep
    pub.close()
