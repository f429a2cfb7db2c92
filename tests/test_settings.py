"""Settings: defaults < YAML file < environment; the example config is valid and complete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from worker.settings import ConfigError, Settings

EXAMPLE = Path(__file__).parent.parent / "config" / "feedworker.example.yaml"


def test_example_config_is_valid_and_matches_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("FEEDWORKER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FEEDWORKER_CONFIG", str(EXAMPLE))
    from_file = Settings()
    monkeypatch.delenv("FEEDWORKER_CONFIG")
    defaults = Settings()
    # The example documents the defaults: reading it changes nothing.
    assert from_file.model_dump(exclude={"config"}) == defaults.model_dump(exclude={"config"})


def test_environment_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "fw.yaml"
    cfg.write_text(yaml.safe_dump({"store_url": "sqlite:///from-file.db", "watch": {"settle_seconds": 3}}))
    monkeypatch.setenv("FEEDWORKER_CONFIG", str(cfg))
    monkeypatch.setenv("FEEDWORKER_STORE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("FEEDWORKER_IMAGES__ALLOW_NETWORKS", '["127.0.0.1/32"]')
    s = Settings()
    assert s.store_url == "sqlite:///from-env.db"
    assert s.watch.settle_seconds == 3
    assert [str(n) for n in s.images.allow_networks] == ["127.0.0.1/32"]


def test_bad_config_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "fw.yaml"
    cfg.write_text("- a list\n")
    monkeypatch.setenv("FEEDWORKER_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="must be a mapping"):
        Settings()
    monkeypatch.setenv("FEEDWORKER_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="not a file"):
        Settings()
