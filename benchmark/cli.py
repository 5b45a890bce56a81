"""The `ctxray-bench` command line: thin wrappers that parse arguments and print; the work is elsewhere."""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark import __version__
from benchmark.atomic import ensure_writable_folder, write_atomically
from benchmark.config import load_settings
from benchmark.data.pipeline import cohort_summary, image_cache, prepare_data, resolve_cohort_file, resolve_data_root
from benchmark.errors import ConfigError, CtxrayError, OutputError, describe_os_error
from benchmark.outputs import terminal_safe, terminal_safe_data
from benchmark.schemas import CohortSummary, SplitSupport, SupportCounts

if TYPE_CHECKING:
    from benchmark.data.test_sets import ExternalSpec
    from benchmark.evidence.power import PowerResult, Rate
    from benchmark.evidence.preregistration import PlanAdmission
    from benchmark.experiment.runner import RunRequest
    from benchmark.experiment.store import StoreManifest


MAX_CELL = 80  # characters of one table cell; metadata cells can be megabytes long


def _cell(value: object, limit: int = MAX_CELL) -> str:
    """One table cell on one line, cut to `limit` characters with the length it had."""
    text = str(value)
    if len(text) > limit:
        text = f"{text[:limit - 20]}... [{len(text):,} chars]"
    return terminal_safe(text, keep_newlines=False)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], indent: str = "  ") -> str:
    """A plain-text table: numeric columns right-aligned, text columns left-aligned, long cells cut."""
    cells = [[_cell(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    numeric = [bool(rows) and all(re.fullmatch(r"[\d.,/+\-]+", row[i]) for row in cells[1:])
               for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.rjust(w) if right else c.ljust(w) for c, w, right in zip(row, widths, numeric, strict=True)]
        lines.append(indent + "  ".join(parts).rstrip())
        if n == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _support_cells(s: SupportCounts) -> list[object]:
    return [s.images, s.patients, s.positive_images, s.negative_images, s.positive_patients, s.negative_patients]


_SPLIT_COLUMNS: list[tuple[str, Callable[[SplitSupport], tuple[int, ...]]]] = [
    ("tr img", lambda s: (s.train.images,)),
    ("tr pat", lambda s: (s.train.patients,)),
    ("tr +/- pat", lambda s: (s.train.positive_patients, s.train.negative_patients)),
    ("val img", lambda s: (s.val.images,)),
    ("val pat", lambda s: (s.val.patients,)),
    ("val +/- img", lambda s: (s.val.positive_images, s.val.negative_images)),
    ("val +/- pat", lambda s: (s.val.positive_patients, s.val.negative_patients)),
]


def _span(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _split_rows(splits: list[SplitSupport], max_rows_per_regime: int = 10) -> list[list[object]]:
    """One row per split; a regime with more splits than `max_rows_per_regime` becomes one row of ranges."""
    by_regime: dict[str, list[SplitSupport]] = {}
    for split in splits:
        by_regime.setdefault(split.regime, []).append(split)
    rows: list[list[object]] = []
    for regime, members in by_regime.items():
        groups = [[m] for m in members] if len(members) <= max_rows_per_regime else [members]
        for group in groups:
            label = group[0].split_id.split("/", 1)[1] if len(group) == 1 else f"{len(group)} splits"
            cells = ["/".join(_span([column(m)[i] for m in group]) for i in range(len(column(group[0]))))
                     for _, column in _SPLIT_COLUMNS]
            rows.append([regime, label, *cells])
    return rows


def _source_lines(summary: CohortSummary) -> list[str]:
    """Which cohort, its table's hash, the modality roles and how its files were read."""
    source = summary.source
    if source is None:
        return [f"ctxray-bench {__version__}: cohorts of {summary.data_root}",
                f"  metadata.csv sha256 {summary.metadata_sha256[:16]}..., kept-image list sha256 "
                f"{summary.image_list_sha256[:16]}..., images cached at {summary.image_size} x {summary.image_size}"]
    what = "cohort manifest" if source.kind == "manifest" else "COVID-19 Image Data Collection at"
    table = "manifest" if source.kind == "manifest" else "metadata.csv"
    policy = source.reader_policy
    lines = [f"ctxray-bench {__version__}: cohorts of {what} {source.path}",
             f"  {table} sha256 {source.table_sha256[:16]}..., kept-image list sha256 "
             f"{summary.image_list_sha256[:16]}..., images cached at {summary.image_size} x {summary.image_size}",
             f"  target modality (deployed): {source.target_modality}; privileged modality (training only): "
             f"{source.privileged_modality}" + ("; 3-D volumes included" if source.include_volumes else ""),
             f"  reader policy: multi-frame DICOM -> {policy.multiframe} frame, 3-D NIfTI -> {policy.volume}, "
             f"DICOM grey levels -> {policy.window}"]
    lines += [f"    {use.images} image(s) by {use.reader}: {use.policy}" for use in source.readers]
    return lines


def format_cohort_summary(summary: CohortSummary, *, list_skipped: bool = False) -> str:
    """The human-readable cohort table printed by `ctxray-bench cohorts`: every id, path and detail from the
    cohort's files is printed with its control characters escaped (benchmark.outputs)."""
    summary = CohortSummary.model_validate(terminal_safe_data(summary.model_dump(mode="json")))
    report = summary.filter_report
    out = [*_source_lines(summary), "", "Row filtering (PROTOCOL.md section 2, checks in this order; reasons that "
           "dropped no row are not listed)"]
    rows: list[list[object]] = [[reason.value, count] for reason, count in report.counts.items() if count]
    rows += [["kept", report.kept_rows], ["total rows", report.total_rows]]
    out.append(_table(["reason", "rows"], rows))
    if report.warnings:
        out += [f"  warning: {w}" for w in report.warnings]
    if list_skipped:
        out += ["", "Skipped rows"]
        out.append(_table(["line", "patient", "reason", "path", "detail"],
                          [[s.line, s.patient_id, s.reason.value, s.path, s.detail] for s in report.skipped]))

    support_header = ["images", "patients", "pos img", "neg img", "pos pat", "neg pat"]
    out += ["", "Manifests (patient label: any positive image in the manifest)"]
    out.append(_table(["manifest", *support_header],
                      [[name, *_support_cells(s)] for name, s in summary.manifests.items()]))

    out += ["", "Test sets (PROTOCOL.md section 13: every deployable run is scored on them; no model or teacher "
            "trains on them)"]
    if summary.test_sets:
        out.append(_table(["test set", "kind", *support_header, "from"],
                          [[t.name, t.kind, *_support_cells(t.support), t.table] for t in summary.test_sets]))
    for t in summary.test_sets:
        out += [f"  {t.name}: {t.description}" + (f"; {t.skipped_rows} row(s) of its manifest not kept"
                                                    if t.skipped_rows else "")]
        out += [f"    left out: {e.image_id} (patient {e.patient_id}, line {e.line}): {e.reason}" for e in t.excluded]
    out += [f"  {note}" for note in summary.test_set_notes]

    out += ["", "Regimes"]
    out.append(_table(["regime", "manifest", "splits", "admissible val sets", "training seeds", "role"],
                      [[r.name, r.manifest, r.splits, "-" if r.admissible_sets is None else r.admissible_sets,
                        "split seed" if r.training_seeds is None else ",".join(map(str, r.training_seeds)), r.role]
                       for r in summary.regimes]))
    out += ["", "Default splits (train | validation; a regime of many splits shows min-max)"]
    out.append(_table(
        ["regime", "split", *(name for name, _ in _SPLIT_COLUMNS)], _split_rows(summary.splits)))
    for regime, why in summary.split_errors.items():
        out.append(f"  {regime}: not drawn: {why}")

    audit = summary.audit
    out += ["", "Data audit (shown beside every paired-cohort result)",
            f"  patients whose X-ray and CT labels disagree: {len(audit.disagreeing_patients)}"]
    if audit.disagreeing_patients:
        out.append(_table(["patient", "X-ray label", "CT label", "paired", "X-ray findings", "CT findings"],
                          [[d.patient_id, d.xray_label, d.ct_label, "yes" if d.in_paired_cohort else "no",
                            "; ".join(d.xray_findings), "; ".join(d.ct_findings)]
                           for d in audit.disagreeing_patients], indent="    "))
    negatives, covid_ct = audit.paired_negative_patients, audit.paired_negatives_with_covid_ct
    out.append(f"  paired negative patients: {len(negatives)} ({', '.join(negatives) or '-'}); "
               f"of them with a COVID-19 CT: {len(covid_ct)} ({', '.join(covid_ct) or '-'})")
    out.append(f"  matched pairs whose X-ray and CT labels differ: {audit.paired_label_mismatched_pairs}")
    out.append("  label-definition sensitivity (paired cohort):")
    for d in audit.label_definitions:
        verdict = "Monte Carlo possible" if d.monte_carlo_feasible else "Monte Carlo NOT possible"
        out.append(f"    {d.definition}: {d.patients} patients, {d.positive_patients} positive, "
                   f"{d.negative_patients} negative -> {verdict} ({d.why})")
    return "\n".join(out)


def _cohort_of(args: argparse.Namespace) -> Path:
    """The cohort a command reads: --cohort (a manifest CSV) or --data (a clone of the collection)."""
    return resolve_cohort_file(args.cohort) if args.cohort else resolve_data_root(args.data)


def _cmd_cohorts(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    cache = image_cache(settings, args.cache)
    prepared = prepare_data(_cohort_of(args), settings, cache, exhaustive=args.exhaustive,
                            progress=sys.stderr.isatty(), externals=args.external)
    summary = cohort_summary(prepared)
    print(format_cohort_summary(summary, list_skipped=args.list_skipped))
    if args.json:
        write_atomically(Path(args.json), summary.model_dump_json(indent=2).encode("utf-8"))
        print(f"\nwrote {args.json}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from benchmark.data.imaging import ImageBank
    from benchmark.methods.configurations import with_added_configurations
    from benchmark.methods.engine import Engine
    from benchmark.methods.teachers import TeacherStore
    from benchmark.methods.training import resolve_device

    settings = load_settings(args.config)
    configurations = with_added_configurations(args.configurations)
    _say_plugin_code(args.configurations)
    if args.configuration not in configurations:
        raise ConfigError(f"unknown configuration {args.configuration!r}; declared: {', '.join(configurations)}")
    configuration = configurations[args.configuration]
    cache = image_cache(settings, args.cache)
    prepared = prepare_data(_cohort_of(args), settings, cache, exhaustive=args.regime == "paired-exhaustive")
    default_regime = {"all-xray": "reference-all-xray", "all-ct": "reference-all-ct"}.get(
        configuration.manifest, "paired-fixed")
    regimes = {r.name: r for r in prepared.regimes}
    regime_name = args.regime or default_regime
    if regime_name not in regimes:
        raise ConfigError(f"regime {regime_name!r} is not available: "
                          f"{prepared.split_errors.get(regime_name, 'unknown regime')}")
    regime = regimes[regime_name]
    if not 0 <= args.split < len(regime.splits):
        raise ConfigError(f"{regime_name} has splits 0..{len(regime.splits) - 1}, not {args.split}")
    split = regime.splits[args.split]
    seed = args.seed if args.seed is not None else regime.seeds_for(split)[0]
    device = resolve_device(args.device)
    engine = Engine(prepared, ImageBank(cache, settings.data.normalise_mean, settings.data.normalise_std),
                    TeacherStore(args.teachers), device)
    output = engine.run(configuration, split, seed)
    fitted = output.fitted
    print(f"{configuration.name} on {split.split_id} (seed {seed}, device {device}): "
          f"{fitted.fit_log.steps} steps in {fitted.fit_log.seconds:.2f} s")
    if fitted.teacher is not None:
        print(f"  teacher {fitted.teacher.teacher_id[:12]} ({fitted.teacher.modality}, "
              f"{len(fitted.teacher.training_patients)} training patients, "
              f"{'from cache' if fitted.teacher.from_cache else f'trained in {fitted.teacher.train_seconds:.1f} s'})")
    for epoch, terms in enumerate(fitted.fit_log.epoch_terms, start=1):
        print(f"  epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in terms.items()))
    print(_table(["patient", "image", "label", "P(COVID-19)"],
                 [[p.patient_id, p.image_id, p.label, f"{p.score:.4f}"] for p in output.predictions]))
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


def _cmd_run(args: argparse.Namespace) -> int:
    from benchmark.experiment.runner import run_profile
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
    from benchmark.experiment.runner import RunRequest

    return RunRequest(
        data_root=_cohort_of(args), profile=args.profile, out=out, workers=args.workers,
        threads=args.threads, device=args.device, settings_path=args.config, configurations_path=args.configurations,
        matrix_path=args.matrix, cache_root=args.cache, teacher_root=args.teachers,
        progress=not args.quiet and sys.stderr.isatty(), executor=args.executor, ray_address=args.address,
        externals=tuple(args.external), plan=admission)


def _cmd_plan(args: argparse.Namespace) -> int:
    from benchmark.evidence.preregistration import plan_body, plugin_identities, write_plan
    from benchmark.experiment.runner import plan

    _say_plugin_code(args.configurations)
    out = Path(args.out)
    ensure_writable_folder(out.parent)
    _, specs, manifest, _ = plan(_run_request(args, Path(f"results/{args.profile}")))
    written = write_plan(plan_body(manifest, specs, plugin_identities(specs)), out)
    print(f"plan: {out} (sha256 {written.sha256}, {written.created_at}): {len(written.plan.run_ids)} runs of "
          f"{len(written.plan.configurations)} configurations; run it with `ctxray-bench run --plan {out}` and the "
          "same options")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
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


def _cmd_claims(args: argparse.Namespace) -> int:
    import pytest

    import benchmark.claims

    folder = Path(benchmark.claims.__file__).parent
    argv = [str(folder), "--rootdir", str(folder), "-p", "no:cacheprovider"]
    argv += ["--results", args.results] if args.results else []
    argv += ["--data", args.data] if args.data else []
    argv += [f"--external={spec.name}={spec.path}" for spec in args.external]
    return int(pytest.main(argv + list(args.pytest_args)))


def _cmd_synthetic(args: argparse.Namespace) -> int:
    from benchmark.data.synthetic import load_recipe, write_recipe

    recipe = load_recipe(Path(args.recipe) if args.recipe else None)
    if args.layout:
        recipe = recipe.model_copy(update={"layout": args.layout})
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


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from benchmark.data.fetch import fetch

    folder, verification, fetched = fetch(Path(args.dest) if args.dest else None, args.ref, args.url, args.sha256)
    state = "fetched and verified" if fetched else "already fetched; verified"
    print(f"{state}: metadata.csv sha256 {verification.metadata_sha256}, {verification.present_images} of "
          f"{verification.referenced_images} referenced images present")
    print(f"data: {folder.resolve()}")
    return 0


def format_power(result: PowerResult) -> str:
    """The power table printed by `ctxray-bench power`."""

    def rate(r: Rate | None) -> str:
        return "-" if r is None else f"{r.rate:.2f} ({r.detections}/{r.replicates}; {r.low:.2f}-{r.high:.2f})"

    rows = [[c.paired_patients, c.negative_patients, c.resamples, rate(c.h1_power), rate(c.h1_false_positive_rate),
             rate(c.h2_power), rate(c.h2_false_positive_rate)] for c in result.cells]
    return "\n".join([
        f"power grid {result.grid.name}: {len(result.replicates)} replicate evaluations in {result.seconds:.0f} s",
        _table(["paired", "neg", "R", "H1 power (planted)", "H1 false positives (null)", "H2 power",
                "H2 false positives"], rows),
        "", f"minimum decisive experiment: {result.statement}"])


def _cmd_power(args: argparse.Namespace) -> int:
    from benchmark.atomic import write_atomically
    from benchmark.evidence.power import load_grid, run_power, write_power
    from benchmark.report.render import render_power_report, write_report

    out = Path(args.out)
    result = run_power(load_grid(args.grid, args.grids), out, workers=args.workers, threads=args.threads,
                       executor=args.executor, device=args.device, progress=not args.quiet and sys.stderr.isatty())
    print(format_power(result))
    write_power(result, out / "power.json")
    page = out / "power.html"
    write_atomically(page, render_power_report(result).encode("utf-8"))
    print(f"power: {page.resolve()}")
    if args.results:
        write_power(result, Path(args.results) / "power.json")
        print(f"report: {write_report(Path(args.results)).resolve()}")
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
    parser = argparse.ArgumentParser(prog="ctxray-bench", description=__doc__)
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
    cohorts.add_argument("--exhaustive", action="store_true", help="also enumerate the exhaustive paired regime")
    cohorts.add_argument("--list-skipped", action="store_true", help="list every skipped row with its reason")
    _add_external_option(cohorts, "checked against the cohort and its support printed")
    cohorts.set_defaults(handler=_cmd_cohorts)

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
    train.set_defaults(handler=_cmd_train)

    run = commands.add_parser("run", parents=[common],
                              help="run a profile of the experiment matrix into a results store")
    run.add_argument("--out", help="output folder: store, summary, report (default: results/PROFILE)")
    run.add_argument("--plan", help="a pre-registration plan (`ctxray-bench plan`): refused in one line when this run "
                                    "differs from it; stored with the runs, and the report says 'pre-registered'")
    _add_run_options(run)
    run.set_defaults(handler=_cmd_run)

    plan = commands.add_parser("plan", parents=[common],
                               help="write the pre-registration plan of a run (same options as run) before any run")
    plan.add_argument("--out", default="plan.json", help="plan file to write (default: plan.json)")
    _add_run_options(plan)
    plan.set_defaults(handler=_cmd_plan)

    power = commands.add_parser("power", parents=[common],
                                help="measure the protocol's power and false-positive rate on synthetic "
                                     "cohorts, and the minimum decisive experiment")
    power.add_argument("--grid", default="default", help="grid of benchmark/configs/power.toml (default: default)")
    power.add_argument("--grids", help="power grids TOML (default: the packaged one)")
    power.add_argument("--out", default="results/power", help="folder for cohorts, stores, power.json, power.html")
    power.add_argument("--results", help="a results store whose report should show the power section")
    power.add_argument("--workers", type=_at_least_one, default=os.cpu_count() or 1, help="parallel workers")
    power.add_argument("--threads", type=_at_least_one, help="torch threads per worker (default: CPUs / workers)")
    power.add_argument("--executor", default="local", choices=["local", "ray"], help="local processes or Ray")
    power.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="default: cpu")
    power.add_argument("--quiet", action="store_true", help="no progress bar")
    power.set_defaults(handler=_cmd_power)

    synthetic = commands.add_parser("synthetic", parents=[common],
                                    help="write a synthetic paired cohort (DICOM and NIfTI with a cohort manifest, "
                                         "or PNG in the collection's layout) for examples and tests")
    synthetic.add_argument("--out", required=True, help="folder to write the cohort into (new or empty)")
    synthetic.add_argument("--recipe", help="recipe TOML: layout and [spec] (see examples/; default: the default "
                                            "recipe)")
    synthetic.add_argument("--layout", choices=["medical", "collection"], help="override the recipe's layout")
    synthetic.set_defaults(handler=_cmd_synthetic)

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
    fetch.set_defaults(handler=_cmd_data_fetch)

    report = commands.add_parser("report", parents=[common],
                                 help="render the HTML evidence report of a results store")
    report.add_argument("--results", required=True, help="output folder of `ctxray-bench run`")
    report.add_argument("--out", help="HTML file to write (default: RESULTS/report.html)")
    _add_external_option(report, "checked to be the file the store's runs were scored on")
    report.set_defaults(handler=_cmd_report)

    claims = commands.add_parser("claims", parents=[common],
                                 help="judge a results store with the claim tests (pytest's exit code)")
    claims.add_argument("--results", help="output folder of `ctxray-bench run` (default: $CTXRAY_RESULTS; with "
                                          "neither, the paper profile is run on the data into results/paper)")
    claims.add_argument("--data", help="collection data root or cohort manifest the store was computed on, if it "
                                       "has moved (default: where the store says, else $CTXRAY_DATA)")
    _add_external_option(claims, "where the store's external test set lies if it has moved; with no store, the "
                                 "paper run scores it")
    claims.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="more pytest arguments after --")
    claims.set_defaults(handler=_cmd_claims)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ctxray-bench` console script: every error is one line (exit 2 for bad input, 1 for the
    machine's), with its traceback under --debug."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except BrokenPipeError:  # output piped into `head` and closed early: not an error of ours
        sys.stderr.close()
        return 0
    except (CtxrayError, OSError) as exc:  # ours, or the machine's (permissions, full disk): one line each
        if args.debug:
            traceback.print_exc()
        message = describe_os_error(exc) if isinstance(exc, OSError) else str(exc)
        print(f"ctxray-bench: error: {terminal_safe(' '.join(message.split()), keep_newlines=False)}", file=sys.stderr)
        return 2 if isinstance(exc, CtxrayError) and not isinstance(exc, OutputError) else 1


if __name__ == "__main__":
    sys.exit(main())
