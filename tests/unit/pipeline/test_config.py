from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.config_runtime import check_endpoint

REPO = Path(__file__).resolve().parents[3]


def test_shipped_configs_are_valid():
    for path in (REPO / "configs").glob("*.yaml"):
        load_config(path)


def test_unknown_key_is_rejected_with_its_dotted_name(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detect:\n  scor_threshold: 0.3\n")
    with pytest.raises(ConfigError, match=r"detect\.scor_threshold: unknown key"):
        load_config(cfg)


def test_bad_values_and_files_give_one_line_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("detect: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="score_threshold") as info:
        load_config(None, {"detect.score_threshold": 1.5})
    assert "\n" not in str(info.value)


def test_cli_overrides_beat_env_which_beats_file(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("detect:\n  score_threshold: 0.3\n  iou_threshold: 0.4\n")
    env = {"VIGIL__DETECT__SCORE_THRESHOLD": "0.6", "VIGIL__DETECT__IOU_THRESHOLD": "0.7"}
    loaded = load_config(cfg, {"detect.iou_threshold": 0.9}, env=env)
    assert loaded.detect.score_threshold == 0.6 and loaded.detect.iou_threshold == 0.9


@pytest.mark.parametrize(
    "good", ["tcp://127.0.0.1:5555", "tcp://*:1", "ipc:///tmp/x", "tcp://[::1]:80"]
)
def test_good_endpoints(good):
    assert check_endpoint(good) == good


@pytest.mark.parametrize(
    "bad", ["127.0.0.1:5555", "tcp://127.0.0.1", "tcp://h:0", "tcp://h:70000", "udp://h:1"]
)
def test_bad_endpoints(bad):
    with pytest.raises(ValueError, match="bad endpoint"):
        check_endpoint(bad)
    with pytest.raises(ConfigError, match="bad endpoint"):
        load_config(None, {"publish.events": bad})
