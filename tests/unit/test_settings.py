"""Settings layering (defaults < YAML < env < flags) and DERMAOPS_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

from dermaops.data.prepare import PrepareSettings
from dermaops.errors import ConfigError
from dermaops.settings import Home, load_settings


def test_layers_in_order(tmp_path: Path) -> None:
    config = tmp_path / "prepare.yaml"
    config.write_text("seed: 1\ncache_height: 128\nmax_share_gap: 0.05\n")
    env = {"DERMAOPS_PREPARE_SEED": "2", "DERMAOPS_PREPARE_CACHE_HEIGHT": "64"}
    settings = load_settings(
        PrepareSettings, env_prefix="DERMAOPS_PREPARE_", config_file=config,
        overrides={"seed": 3, "workers": None}, environ=env,
    )  # fmt: skip
    assert settings.seed == 3  # flag beats env and file
    assert settings.cache_height == 64  # env beats file
    assert settings.max_share_gap == 0.05  # file beats default
    assert settings.fractions == (0.8, 0.1, 0.1)  # default
    assert settings.cache_size == (85, 64)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("seeed: 1\n", "seeed"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("seed: [unclosed\n", "cannot read settings file"),
        ("fractions: [0.5, 0.5, 0.5]\n", "sum to 1"),
        ("cache_height: 4\n", "cache_height"),
    ],
)
def test_bad_settings_files_say_what_is_wrong(tmp_path: Path, text: str, match: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(PrepareSettings, env_prefix="X_", config_file=config, environ={})


def test_bad_env_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="seed"):
        load_settings(PrepareSettings, env_prefix="P_", environ={"P_SEED": "many"})


def test_home_layout(dermaops_home: Path) -> None:
    home = Home.from_env()
    assert home.root == dermaops_home
    assert home.data == dermaops_home / "data"
    assert home.mlflow == dermaops_home / "mlflow"
    assert home.inference_log == dermaops_home / "inference"
    assert home.feedback == dermaops_home / "feedback"
    assert home.downloads == dermaops_home / "downloads"
    assert Home.from_env({}).root == Path(".dermaops")
