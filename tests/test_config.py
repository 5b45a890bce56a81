"""Settings are validated data: bad values and unknown keys name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import DEFAULT_CONFIG, Settings, load_settings
from benchmark.errors import ConfigError


def test_packaged_defaults_match_the_protocol() -> None:
    settings = load_settings()
    assert settings == Settings()
    assert (settings.data.image_size, settings.splits.monte_carlo_resamples,
            settings.splits.monte_carlo_val_patients, settings.splits.monte_carlo_seed_base) == (128, 8, 5, 1000)
    assert settings.splits.training_seeds == [42, 43, 44, 45]
    assert DEFAULT_CONFIG.is_file()


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[splits]\nmonte_carlo_resampels = 8\n")
    with pytest.raises(ConfigError, match=r"s\.toml: splits\.monte_carlo_resampels: Extra inputs"):
        load_settings(path)


def test_out_of_range_value_is_an_error_with_the_value(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[splits]\nval_fraction = 1.5\n")
    with pytest.raises(ConfigError, match=r"splits\.val_fraction.*1\.5"):
        load_settings(path)


def test_repeated_training_seeds_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[splits]\ntraining_seeds = [1, 1]\n")
    with pytest.raises(ConfigError, match="repeat"):
        load_settings(path)


def test_invalid_toml_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[splits\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)
