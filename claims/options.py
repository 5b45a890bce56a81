"""Command-line options shared by the claim tests and the unit tests (`pytest tests claims --data PATH`).

Both conftests call `add_options`; whichever pytest loads first registers the options, so the claim
tests keep their options when they run alone from an installed wheel (`ctxray-bench claims`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmark.data.pipeline import DATA_ENV
from benchmark.data.test_sets import ExternalSpec


def add_options(parser: pytest.Parser) -> None:
    """Register --data (data root) and --results (store to judge) unless another conftest already did."""
    try:
        parser.addoption("--external", action="append", default=[], metavar="NAME=FILE",
                         help="an external test set of the store, where it lies if it has moved (with no store: the "
                              "paper run scores it); repeatable")
    except ValueError:  # registered by the other conftest of this session
        pass
    for flag, text in (
            ("--data", f"data root with metadata.csv and images/ (default: ${DATA_ENV}), or the cohort manifest a "
                       "store was computed on; a data root named here or in the environment that holds no "
                       "metadata.csv fails the unit tests that need it"),
            ("--results", "output folder of `ctxray-bench run` to judge (default: $CTXRAY_RESULTS; with neither, "
                          "the claim tests run the paper profile on the data first)")):
        try:
            parser.addoption(flag, help=text)
        except ValueError:  # registered by the other conftest of this session
            pass


def named_data_root(config: pytest.Config) -> Path | None:
    """The data root named by --data or $CTXRAY_DATA; None when neither names one."""
    value = config.getoption("--data", default=None) or os.environ.get(DATA_ENV)
    return Path(value).expanduser() if value else None


def required_data_root(config: pytest.Config) -> Path:
    """The named data root; skips when none is named, fails when the named one holds no metadata.csv."""
    root = named_data_root(config)
    if root is None:
        pytest.skip(f"no data root named (pass --data PATH or set {DATA_ENV})")
    if not (root / "metadata.csv").is_file():
        pytest.fail(f"{root}: the data root named by --data / ${DATA_ENV} holds no metadata.csv")
    return root


def named_externals(config: pytest.Config) -> list[ExternalSpec]:
    """The external test sets named by --external NAME=FILE (a bad argument fails the session in one line)."""
    from benchmark.data.test_sets import parse_external

    return [parse_external(text) for text in config.getoption("--external", default=[]) or []]
