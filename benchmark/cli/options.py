"""The argument parser of every sub-command of `ctxray-bench`."""

from __future__ import annotations

import argparse
import os

from benchmark import __version__
from benchmark.cli import commands as handlers
from benchmark.data.test_sets import ExternalSpec

DESCRIPTION = "The `ctxray-bench` command line: thin wrappers that parse arguments and print; the work is elsewhere."


def _external(text: str) -> ExternalSpec:
    """An argparse type: NAME=FILE, an external test set."""
    from benchmark.data.test_sets import parse_external
    from benchmark.errors import TestSetError

    try:
        return parse_external(text)
    except TestSetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_external_option(command: argparse.ArgumentParser, what: str) -> None:
    """--external NAME=FILE, repeatable."""
    command.add_argument("--external", type=_external, action="append", default=[], metavar="NAME=FILE",
                         help=f"an external test set: a cohort manifest of the target modality ({what}); repeatable")


def _at_least_one(text: str) -> int:
    """An argparse type: an integer of at least 1 (worker and thread counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_synthetic_study_options(study: argparse.ArgumentParser) -> None:
    """The execution options of a study over many synthetic cohorts (power, gate-chance)."""
    study.add_argument("--workers", type=_at_least_one, default=os.cpu_count() or 1, help="parallel workers")
    study.add_argument("--threads", type=_at_least_one, help="torch threads per worker (default: CPUs / workers)")
    study.add_argument("--executor", default="local", choices=["local", "ray"], help="local processes or Ray")
    study.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="default: cpu")
    study.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_cohort_options(command: argparse.ArgumentParser) -> None:
    """--cohort FILE or --data PATH: the two ways to name a cohort."""
    which = command.add_mutually_exclusive_group()
    which.add_argument("--cohort", metavar="FILE", help="a cohort manifest CSV (patient_id, modality, label, path; "
                                                       "README, 'Your own cohort')")
    which.add_argument("--data", help="a clone of the COVID-19 Image Data Collection: metadata.csv and images/ "
                                      "(default: $CTXRAY_DATA)")


def _add_run_options(command: argparse.ArgumentParser) -> None:
    """The options of `run` that say what runs (shared by `plan`, whose plan fixes them)."""
    _add_cohort_options(command)
    command.add_argument("--profile", default="paper", help="profile of the matrix (default: paper)")
    command.add_argument("--workers", type=_at_least_one, default=os.cpu_count() or 1,
                         help="parallel local worker processes (default: one per CPU)")
    command.add_argument("--threads", type=_at_least_one,
                         help="torch threads per worker (default: CPUs / workers); part of what makes a run bit-exact")
    command.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="default: cpu")
    command.add_argument("--config", help="settings TOML (default: the packaged configs/default.toml)")
    command.add_argument("--configurations", help="a TOML of configurations added to the packaged ones; those marked "
                                                   "`candidate = true` join the matrix and are compared with the "
                                                   "controls")
    command.add_argument("--matrix", help="experiment matrix TOML (default: the packaged configs/matrix.toml)")
    command.add_argument("--cache", help="image cache folder (default: $CTXRAY_CACHE or ~/.cache/ctxray-bench)")
    command.add_argument("--teachers", help="teacher cache folder (default: OUT/teachers)")
    command.add_argument("--executor", default="local", choices=["local", "ray"],
                         help="local worker processes (default) or Ray tasks")
    command.add_argument("--address", help="Ray cluster address (e.g. auto or ray://HEAD:10001; default: start a "
                                           "local Ray instance)")
    command.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_external_option(command, "every deployable run is scored on it; refused when it shares a patient or an "
                                  "image with the cohort or another test set")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="ctxray-bench", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True)

    cohorts = commands.add_parser("cohorts", parents=[common],
                                  help="filter the data, build manifests and splits, print support")
    _add_cohort_options(cohorts)
    cohorts.add_argument("--config", help="settings TOML (default: the packaged configs/default.toml)")
    cohorts.add_argument("--cache", help="image cache folder (default: $CTXRAY_CACHE or ~/.cache/ctxray-bench)")
    cohorts.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")
    cohorts.add_argument("--exhaustive", dest="regimes", action="append_const", const="paired-exhaustive",
                         default=[], help="also enumerate the exhaustive paired regime")
    cohorts.add_argument("--kfold", dest="regimes", action="append_const", const="paired-kfold",
                         help="also draw the paired k-fold regime")
    cohorts.add_argument("--list-skipped", action="store_true", help="list every skipped row with its reason")
    _add_external_option(cohorts, "checked against the cohort and its support printed")
    cohorts.set_defaults(handler=handlers.cmd_cohorts)

    train = commands.add_parser("train", parents=[common],
                                help="train one configuration on one split and print its predictions")
    train.add_argument("configuration", help="a configuration name (see benchmark/configs/configurations.toml)")
    _add_cohort_options(train)
    train.add_argument("--regime", help="regime name (default: the configuration's reference or paired-fixed)")
    train.add_argument("--split", type=int, default=0, help="split index within the regime (default 0)")
    train.add_argument("--seed", type=int, help="training seed (default: the regime's first seed for the split)")
    train.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="default: cpu")
    train.add_argument("--config", help="settings TOML (default: the packaged configs/default.toml)")
    train.add_argument("--configurations", help="a TOML of configurations added to the packaged ones")
    train.add_argument("--cache", help="image cache folder (default: $CTXRAY_CACHE or ~/.cache/ctxray-bench)")
    train.add_argument("--teachers", help="folder to cache trained teachers in (default: memory only)")
    train.set_defaults(handler=handlers.cmd_train)

    run = commands.add_parser("run", parents=[common],
                              help="run a profile of the experiment matrix into a results store")
    run.add_argument("--out", help="output folder: store, summary, report (default: results/PROFILE)")
    run.add_argument("--plan", help="a pre-registration plan (`ctxray-bench plan`): refused in one line when this run "
                                    "differs from it; stored with the runs, and the report says 'pre-registered'")
    _add_run_options(run)
    run.set_defaults(handler=handlers.cmd_run)

    plan = commands.add_parser("plan", parents=[common],
                               help="write the pre-registration plan of a run (same options as run) before any run")
    plan.add_argument("--out", default="plan.json", help="plan file to write (default: plan.json)")
    _add_run_options(plan)
    plan.set_defaults(handler=handlers.cmd_plan)

    power = commands.add_parser("power", parents=[common],
                                help="measure the protocol's power and false-positive rate on synthetic "
                                     "cohorts, and the minimum decisive experiment")
    power.add_argument("--grid", default="default", help="grid of benchmark/configs/power.toml (default: default)")
    power.add_argument("--grids", help="power grids TOML (default: the packaged one)")
    power.add_argument("--out", default="results/power", help="folder for cohorts, stores, power.json, power.html")
    power.add_argument("--results", help="a results store whose report should show the power section")
    _add_synthetic_study_options(power)
    power.set_defaults(handler=handlers.cmd_power)

    chance = commands.add_parser("gate-chance", parents=[common],
                                 help="measure how often the seed authors' gate, and section 8 with Holm, pass at "
                                      "least one of m swept cells on null synthetic cohorts")
    chance.add_argument("--grid", default="default",
                        help="grid of benchmark/configs/gate_chance.toml (default: default)")
    chance.add_argument("--grids", help="gate-chance grids TOML (default: the packaged one)")
    chance.add_argument("--out", default="results/gate-chance", help="folder for cohorts, stores and gate_chance.json")
    chance.add_argument("--results", help="a results store whose report should show the gate-chance section")
    _add_synthetic_study_options(chance)
    chance.set_defaults(handler=handlers.cmd_gate_chance)

    synthetic = commands.add_parser("synthetic", parents=[common],
                                    help="write a synthetic paired cohort (DICOM and NIfTI with a cohort manifest, "
                                         "or PNG in the collection's layout) for examples and tests")
    synthetic.add_argument("--out", required=True, help="folder to write the cohort into (new or empty)")
    synthetic.add_argument("--recipe", help="recipe TOML: layout and [spec] (see examples/; default: the default "
                                            "recipe)")
    synthetic.add_argument("--layout", choices=["medical", "collection"], help="override the recipe's layout")
    synthetic.add_argument("--ct-volumes", choices=["even", "all"],
                           help="override the recipe's spec.ct_volumes: which patients' CT are 3-D NIfTI volumes "
                                "(medical layout; `all` for [cohort.readers] privileged_slices)")
    synthetic.set_defaults(handler=handlers.cmd_synthetic)

    from benchmark.data.fetch import PINNED_COMMIT, UPSTREAM_URL

    data = commands.add_parser("data", parents=[common],
                               help="obtain the dataset")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    fetch = data_commands.add_parser("fetch", parents=[common],
                                     help="clone the public collection at a pinned commit and verify it")
    fetch.add_argument("--dest", help="folder to fetch into (default: $CTXRAY_HOME/data/... or "
                                      "~/.local/share/ctxray-bench/data/covid-chestxray-dataset)")
    fetch.add_argument("--ref", default=PINNED_COMMIT, help=f"commit to check out (default: {PINNED_COMMIT})")
    fetch.add_argument("--url", default=UPSTREAM_URL, help=f"git repository (default: {UPSTREAM_URL})")
    fetch.add_argument("--sha256", help="expected sha256 of metadata.csv (known for the pinned commit)")
    fetch.set_defaults(handler=handlers.cmd_data_fetch)

    report = commands.add_parser("report", parents=[common],
                                 help="render the HTML evidence report of a results store")
    report.add_argument("--results", required=True, help="output folder of `ctxray-bench run`")
    report.add_argument("--out", help="HTML file to write (default: RESULTS/report.html)")
    _add_external_option(report, "checked to be the file the store's runs were scored on")
    report.set_defaults(handler=handlers.cmd_report)

    claims = commands.add_parser("claims", parents=[common],
                                 help="judge a results store with the claim tests (pytest's exit code)")
    claims.add_argument("--results", help="output folder of `ctxray-bench run` (default: $CTXRAY_RESULTS; with "
                                          "neither, the paper profile is run on the data into results/paper)")
    claims.add_argument("--data", help="collection data root or cohort manifest the store was computed on, if it "
                                       "has moved (default: where the store says, else $CTXRAY_DATA)")
    _add_external_option(claims, "where the store's external test set lies if it has moved; with no store, the "
                                 "paper run scores it")
    claims.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="more pytest arguments after --")
    claims.set_defaults(handler=handlers.cmd_claims)
    return parser
