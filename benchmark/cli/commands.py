"""The sub-commands of `ctxray-bench`: each calls a study or a stage and prints what it did."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.atomic import ensure_writable_folder, write_atomically
from benchmark.config import load_settings, validation_problems
from benchmark.data.pipeline import cohort_summary, resolve_cohort_file, resolve_data_root
from benchmark.errors import ConfigError, OutputError, describe_os_error
from benchmark.experiment.study import RunRequest, Study, run_profile
from benchmark.outputs import terminal_safe
from benchmark.report.text import format_cohort_summary, format_power, format_trained_run
from benchmark.schemas import OPTIONAL_REGIMES, RegimeName

if TYPE_CHECKING:
    from benchmark.data.test_sets import ExternalSpec
    from benchmark.evidence.preregistration import PlanAdmission
    from benchmark.experiment.store import StoreManifest


def _cohort_of(args: argparse.Namespace) -> Path:
    """The cohort a command reads: --cohort (a manifest CSV) or --data (a clone of the collection)."""
    return resolve_cohort_file(args.cohort) if args.cohort else resolve_data_root(args.data)


def cmd_cohorts(args: argparse.Namespace) -> int:
    """`cohorts`: prepare the cohort and print its filtering, manifests, test sets, regimes and audit."""
    study = Study.of_cohort(_cohort_of(args), load_settings(args.config), args.cache,
                            optional_regimes=[RegimeName(r) for r in args.regimes],
                            externals=args.external, progress=sys.stderr.isatty())
    summary = cohort_summary(study.prepared)
    print(format_cohort_summary(summary, list_skipped=args.list_skipped))
    if args.json:
        write_atomically(Path(args.json), summary.model_dump_json(indent=2).encode("utf-8"))
        print(f"\nwrote {args.json}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """`train`: one configuration on one split, its log and predictions printed."""
    from benchmark.methods.configurations import with_added_configurations

    configurations = with_added_configurations(args.configurations)
    _say_plugin_code(args.configurations)
    if args.configuration not in configurations:
        raise ConfigError(f"unknown configuration {args.configuration!r}; declared: {', '.join(configurations)}")
    configuration = configurations[args.configuration]
    study = Study.of_cohort(_cohort_of(args), load_settings(args.config), args.cache,
                            optional_regimes=[r for r in OPTIONAL_REGIMES if args.regime == r])
    default_regime = {"all-xray": RegimeName.REFERENCE_ALL_XRAY, "all-ct": RegimeName.REFERENCE_ALL_CT}.get(
        configuration.manifest, RegimeName.PAIRED_FIXED)
    regimes = {r.name: r for r in study.prepared.regimes}
    regime_name = args.regime or default_regime
    if regime_name not in regimes:
        raise ConfigError(f"regime {str(regime_name)!r} is not available: "
                          f"{study.prepared.split_errors.get(regime_name, 'unknown regime')}")
    regime = regimes[regime_name]
    if not 0 <= args.split < len(regime.splits):
        raise ConfigError(f"{regime_name} has splits 0..{len(regime.splits) - 1}, not {args.split}")
    split = regime.splits[args.split]
    seed = args.seed if args.seed is not None else regime.seeds_for(split)[0]
    engine = study.engine(args.teachers, args.device)
    output = engine.run(configuration, split, seed)
    print(format_trained_run(output, split.split_id, seed, str(engine.device)))
    return 0


def _say_plugin_code(configurations_path: str | None) -> None:
    """One line naming the plugin code a --configurations file makes this command import and run: it must be
    trusted as an installed package is (README, "Your own method")."""
    if not configurations_path:
        return
    from benchmark.methods.configurations import with_added_configurations
    from benchmark.methods.registry import plugin_code

    found = plugin_code(with_added_configurations(configurations_path).values())
    if found:
        print(f"ctxray-bench: note: {configurations_path} runs plugin code with your rights: {'; '.join(found)}; "
              "use only configuration files and plugins you trust", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    """`run`: every run of a profile not yet stored, then the summary, evidence and report."""
    from benchmark.experiment.store import ResultsStore
    from benchmark.report.render import write_store_outputs

    _say_plugin_code(args.configurations)
    out = Path(args.out or f"results/{args.profile}")
    admission = None
    if args.plan:
        from benchmark.evidence.preregistration import PlanAdmission, load_plan

        plan, content = load_plan(Path(args.plan))
        admission = PlanAdmission(plan, content, Path(args.plan))
    outcome = run_profile(_run_request(args, out, admission))
    stamp = ResultsStore(out).manifest().plan
    if stamp is not None and admission is None and outcome.executed:
        print(f"ctxray-bench: warning: {out} was pre-registered under plan {stamp.sha256[:12]}...; the "
              f"{outcome.executed} run(s) made now without --plan are deviations from it, listed in the report",
              file=sys.stderr)
    for path in outcome.set_aside:
        print(f"ctxray-bench: warning: {path.with_suffix('')}: not a valid run record; set aside as {path.name} "
              f"and computed again", file=sys.stderr)
    if outcome.executed and outcome.stored_threads - {outcome.threads}:
        used = "/".join(map(str, sorted(outcome.stored_threads)))
        print(f"ctxray-bench: warning: the runs already stored used {used} thread(s) per worker, the runs of this "
              f"resume {outcome.threads}: their last bits can differ from an uninterrupted run (--threads sets the "
              f"count)", file=sys.stderr)
    print(f"{args.profile}: {outcome.total} runs; {outcome.skipped} already stored, {outcome.executed} run now, "
          f"{len(outcome.failures)} failed, in {outcome.seconds:.1f} s")
    for run_id, error in outcome.failures.items():
        print(terminal_safe(f"  FAILED {run_id}: {' '.join(error.split())}", keep_newlines=False), file=sys.stderr)
        if args.debug and run_id in outcome.traces:
            print(outcome.traces[run_id], file=sys.stderr)
    if outcome.storage_error is not None:
        raise OutputError(out, f"storing stopped: {outcome.storage_error} ({outcome.executed} run(s) stored); "
                               f"free the space and rerun the same command to finish")
    summary, report = write_store_outputs(out)
    print(f"summary: {summary}")
    print(f"report: {report.resolve()}")
    return 1 if outcome.failures else 0


def _run_request(args: argparse.Namespace, out: Path, admission: PlanAdmission | None = None) -> RunRequest:
    """The RunRequest the options of `run` (and `plan`) describe."""
    return RunRequest(
        cohort=_cohort_of(args), profile=args.profile, out=out, workers=args.workers,
        threads=args.threads, device=args.device, settings_path=args.config, configurations_path=args.configurations,
        matrix_path=args.matrix, cache_root=args.cache, teacher_root=args.teachers,
        progress=not args.quiet and sys.stderr.isatty(), executor=args.executor, ray_address=args.address,
        externals=tuple(args.external), plan=admission)


def cmd_plan(args: argparse.Namespace) -> int:
    """`plan`: the pre-registration plan of a run, written before any run."""
    from benchmark.evidence.preregistration import plan_body, plugin_identities, write_plan

    _say_plugin_code(args.configurations)
    out = Path(args.out)
    ensure_writable_folder(out.parent)
    study = Study.plan(_run_request(args, Path(f"results/{args.profile}")))
    written = write_plan(plan_body(study.manifest(), study.specs, plugin_identities(study.specs)), out)
    print(f"plan: {out} (sha256 {written.sha256}, {written.created_at}): {len(written.plan.run_ids)} runs of "
          f"{len(written.plan.configurations)} configurations; run it with `ctxray-bench run --plan {out}` and the "
          "same options")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """`report`: the store's summary, evidence and HTML report, from stored runs only."""
    from benchmark.experiment.store import ResultsStore, code_version, other_code_versions
    from benchmark.report.render import write_report, write_store_outputs

    store = ResultsStore(Path(args.results))
    check_externals_of_store(store.manifest(), args.external)
    older = other_code_versions((r.code_version for r in store.load_all()), code_version())
    if older:
        print(f"ctxray-bench: warning: {store.root}: {older}", file=sys.stderr)
    if args.out:  # the report elsewhere; the store's evidence.json is rewritten with it
        target = write_report(store.root, Path(args.out))
    else:  # what `run` publishes: summary.csv (and test_summary.csv), evidence.json, report.html
        summary, target = write_store_outputs(store.root)
        print(f"summary: {summary}")
    print(f"report: {target.resolve()}")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    """`claims`: the claim tests on a store (pytest's exit code)."""
    import pytest

    import benchmark.claims

    folder = Path(benchmark.claims.__file__).parent
    argv = [str(folder), "--rootdir", str(folder), "-p", "no:cacheprovider"]
    argv += ["--results", args.results] if args.results else []
    argv += ["--data", args.data] if args.data else []
    argv += [f"--external={spec.name}={spec.path}" for spec in args.external]
    return int(pytest.main(argv + list(args.pytest_args)))


def cmd_synthetic(args: argparse.Namespace) -> int:
    """`synthetic`: write a synthetic paired cohort."""
    from pydantic import ValidationError

    from benchmark.data.synthetic import SyntheticRecipe, load_recipe, write_recipe

    recipe = load_recipe(Path(args.recipe) if args.recipe else None)
    if args.layout or args.ct_volumes:
        given = recipe.model_dump()
        given["layout"] = args.layout or recipe.layout
        given["spec"]["ct_volumes"] = args.ct_volumes or recipe.spec.ct_volumes
        try:
            recipe = SyntheticRecipe.model_validate(given)
        except ValidationError as exc:
            raise ConfigError(f"synthetic --layout/--ct-volumes: {validation_problems(exc)}") from exc
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: not empty; name a new folder for the synthetic cohort")
    written = write_recipe(recipe, out)
    flag = "--cohort" if recipe.layout == "medical" else "--data"
    spec = recipe.spec
    print(f"wrote a {spec.mode} synthetic cohort ({spec.paired_patients} paired patients, {spec.negative_patients} "
          f"negative) in the {recipe.layout} layout: {written}")
    print(f"next: ctxray-bench cohorts {flag} {written}")
    return 0


def cmd_data_fetch(args: argparse.Namespace) -> int:
    """`data fetch`: clone the public collection at a pinned commit and verify it."""
    from benchmark.data.fetch import fetch

    folder, verification, fetched = fetch(Path(args.dest) if args.dest else None, args.ref, args.url, args.sha256)
    state = "fetched and verified" if fetched else "already fetched; verified"
    print(f"{state}: metadata.csv sha256 {verification.metadata_sha256}, {verification.present_images} of "
          f"{verification.referenced_images} referenced images present")
    print(f"data: {folder.resolve()}")
    return 0


def cmd_power(args: argparse.Namespace) -> int:
    """`power`: the power study's trainings, then its tabulation, page and (optionally) a store's report."""
    import time

    from benchmark.evidence.power import tabulate_power, write_power
    from benchmark.experiment.power_study import load_grid, run_power_study
    from benchmark.report.render import render_power_report, write_report

    out = Path(args.out)
    start = time.perf_counter()
    grid = load_grid(args.grid, args.grids)
    stores = run_power_study(grid, out, workers=args.workers, threads=args.threads, executor=args.executor,
                             device=args.device, progress=not args.quiet and sys.stderr.isatty())
    result = tabulate_power(grid, stores, time.perf_counter() - start)
    print(format_power(result))
    write_power(result, out / "power.json")
    page = out / "power.html"
    write_atomically(page, render_power_report(result).encode("utf-8"))
    print(f"power: {page.resolve()}")
    if args.results:
        write_power(result, Path(args.results) / "power.json")
        print(f"report: {write_report(Path(args.results)).resolve()}")
    return 0


def cmd_gate_chance(args: argparse.Namespace) -> int:
    """`gate-chance`: the null cohorts' trainings, then how often each rule passes at least one of m cells."""
    import time

    from benchmark.bench.common import cpu_name
    from benchmark.evidence.gate_chance import GATE_CHANCE_FILE, tabulate_gate_chance, write_gate_chance
    from benchmark.experiment.gate_chance_study import load_gate_chance_grid, run_gate_chance_study
    from benchmark.report.render import write_report
    from benchmark.report.text import format_gate_chance

    out = Path(args.out)
    start = time.perf_counter()
    grid = load_gate_chance_grid(args.grid, args.grids)
    results = Path(args.results) if args.results else None
    if results is not None and not (results / "store.json").is_file():  # refused before hours of training
        raise OutputError(results, "--results: not a results store (no store.json); name the output folder of "
                                   "`ctxray-bench run`")
    stores = run_gate_chance_study(grid, out, workers=args.workers, threads=args.threads, executor=args.executor,
                                   device=args.device, progress=not args.quiet and sys.stderr.isatty())
    result = tabulate_gate_chance(grid, stores, time.perf_counter() - start,
                                  f"{cpu_name()}, {os.cpu_count()} CPUs, {args.workers} worker(s), {args.device}")
    print(format_gate_chance(result))
    print(f"gate chance: {write_gate_chance(result, out / GATE_CHANCE_FILE).resolve()}")
    if results is not None:
        write_gate_chance(result, results / GATE_CHANCE_FILE)
        print(f"report: {write_report(results).resolve()}")
    return 0


def check_externals_of_store(manifest: StoreManifest, externals: Sequence[ExternalSpec]) -> None:
    """TestSetError unless each `--external NAME=FILE` names an external test set of the store and the manifest file it
    was scored on (same sha256): a report or a judgement is of the test sets the runs were scored on, never others."""
    import hashlib

    from benchmark.errors import TestSetError

    stored = {t.name: t for t in manifest.test_sets if t.kind == "external"}
    for spec in externals:
        if spec.name not in stored:
            raise TestSetError(f"--external {spec.name}={spec.path}: this store has no external test set "
                               f"{spec.name!r} (it has: {', '.join(stored) or 'none'}); `run --external` scores one")
        try:
            digest = hashlib.sha256(spec.path.read_bytes()).hexdigest()
        except OSError as exc:
            raise TestSetError(f"--external {spec.name}={spec.path}: {describe_os_error(exc)}") from exc
        if digest != stored[spec.name].table_sha256:
            raise TestSetError(f"--external {spec.name}={spec.path}: not the manifest this store was scored on "
                               f"(sha256 {digest[:12]}... here, {stored[spec.name].table_sha256[:12]}... stored)")
