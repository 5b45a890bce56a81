"""Pre-registration (PROTOCOL.md section 14): a plan fixes cohort, matrix, plugins, rules and settings before any run.

`plan` writes it; `run --plan` refuses a run that differs from it; the report lists every deviation by name.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from benchmark import __version__
from benchmark.atomic import write_atomically
from benchmark.errors import PlanError, RegistryError, describe_os_error
from benchmark.evidence.results import ALPHA, MULTIPLICITY
from benchmark.evidence.rules import HYPOTHESES, MC_RULE
from benchmark.experiment.matrix import RunSpec, flat_items
from benchmark.experiment.store import PlanStamp, RunRecord, StoreManifest, now
from benchmark.methods.configurations import Configuration
from benchmark.methods.registry import NETWORKS, OBJECTIVES, Registry, is_this_package

PLAN_SCHEMA_VERSION = 1
PLAN_FILE = "plan.json"
SHOWN = 10  # run ids named per deviation before "and N more"


class PluginIdentity(BaseModel):
    """The code behind one objective or network name: its distribution, version and source files' sha256."""

    kind: Literal["objective", "network"]
    name: str
    distribution: str = Field(description="the installed distribution, or `(python path)` for module:attribute")
    version: str
    files: dict[str, str] = Field(description="source file -> sha256 of its bytes")


class PlannedConfiguration(BaseModel):
    """A configuration of the matrix: what it trains (its content's sha256) and the code it names."""

    name: str
    content_sha256: str = Field(description="sha256 of Configuration.content(), canonical JSON: what run ids hash")
    objectives: list[str]
    networks: list[str]
    candidate: bool


class PlannedTestSet(BaseModel):
    """A test set fixed by the plan: its cases and their support."""

    name: str
    kind: str
    cases_sha256: str
    patients: int
    negative_patients: int


class PlannedRules(BaseModel):
    """The decision rules, alpha and ROPE the evidence is judged by."""

    alpha: float
    rope: float
    hypotheses: list[dict[str, str | None]]
    monte_carlo_rule: str
    multiplicity: str


class PlanBody(BaseModel):
    """Everything a plan fixes before any run (PROTOCOL.md section 14)."""

    profile: str
    cohort: dict[str, str] = Field(description="source, table sha256 and kept-image list sha256")
    configurations: list[PlannedConfiguration]
    plugins: list[PluginIdentity]
    run_ids: list[str]
    rules: PlannedRules
    settings: dict[str, Any] = Field(description="every setting, R, k and negatives per set included")
    test_sets: list[PlannedTestSet]
    code_version: str


class Plan(BaseModel):
    """A written plan: its body, when it was written, and the sha256 of both (canonical JSON)."""

    schema_version: int = PLAN_SCHEMA_VERSION
    sha256: str
    created_at: str
    plan: PlanBody

    @property
    def stamp(self) -> PlanStamp:
        """What every run made under this plan stores."""
        return PlanStamp(sha256=self.sha256, created_at=self.created_at)


def _json_sha256(value: Any) -> str:
    """sha256 of `value` as JSON with sorted keys and no spaces (UTF-8): the same bytes on every machine."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_sha256(created_at: str, body: dict[str, Any]) -> str:
    """A plan's identity: the canonical sha256 of {"created_at", "plan"}."""
    return _json_sha256({"created_at": created_at, "plan": body})


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plugin_identity(registry: Registry[Any], kind: Literal["objective", "network"], name: str) -> PluginIdentity:
    """Which distribution and source files provide `name`, with their sha256."""
    # an entry point's distribution (every .py file it installs), this package for a built-in, or the module file of a
    # `module:attribute`
    factory = registry.get(name)
    module = inspect.getmodule(factory)
    source = inspect.getsourcefile(module) if module is not None else None
    own = {module.__name__: _file_sha256(Path(source))} if module is not None and source else {}
    entry = registry.entry_point(name)
    dist = entry.dist if entry is not None else None
    if dist is not None and not is_this_package(dist.metadata["Name"]):
        files = {str(f): _file_sha256(Path(str(dist.locate_file(f)))) for f in dist.files or []
                 if str(f).endswith(".py") and Path(str(dist.locate_file(f))).is_file()}
        return PluginIdentity(kind=kind, name=name, distribution=dist.metadata["Name"], version=dist.version,
                              files=files or own)
    if ":" in name and module is not None and not module.__name__.startswith("benchmark."):
        return PluginIdentity(kind=kind, name=name, distribution="(python path)", version="", files=own)
    return PluginIdentity(kind=kind, name=name, distribution="ctxray-bench", version=_own_version(), files=own)


def _own_version() -> str:
    try:
        return distribution("ctxray-bench").version
    except PackageNotFoundError:
        return __version__


def _names(configuration: Configuration) -> tuple[list[str], list[str]]:
    networks = [configuration.network.architecture] + (
        [configuration.teacher.network.architecture] if configuration.teacher else [])
    objectives = [t.objective for t in configuration.loss.distillation_terms()] if configuration.teacher else []
    return objectives, list(dict.fromkeys(networks))


def planned_configuration(configuration: Configuration, name: str) -> PlannedConfiguration:
    """A configuration as the plan fixes it, under the name the matrix declared it by."""
    objectives, networks = _names(configuration)
    return PlannedConfiguration(name=name, content_sha256=_json_sha256(configuration.content()),
                                objectives=objectives, networks=networks, candidate=configuration.candidate)


def _configurations(specs: Iterable[RunSpec]) -> list[PlannedConfiguration]:
    found: dict[str, PlannedConfiguration] = {}
    for spec in specs:
        for name in spec.names:
            found.setdefault(name, planned_configuration(spec.configuration, name))
    return [found[name] for name in sorted(found)]


def plugin_identities(specs: Iterable[RunSpec]) -> list[PluginIdentity]:
    """The identity of every objective and network the runs name (RegistryError when one does not load)."""
    objectives: set[str] = set()
    networks: set[str] = set()
    for spec in specs:
        used_objectives, used_networks = _names(spec.configuration)
        objectives.update(used_objectives)
        networks.update(used_networks)
    return ([plugin_identity(OBJECTIVES, "objective", n) for n in sorted(objectives)]
            + [plugin_identity(NETWORKS, "network", n) for n in sorted(networks)])


def planned_rules(rope: float) -> PlannedRules:
    """The section 8 rules and section 14 multiplicity rule, as the code that decides them states them."""
    return PlannedRules(alpha=ALPHA, rope=rope, monte_carlo_rule=MC_RULE, multiplicity=MULTIPLICITY,
                        hypotheses=[{"key": h.key, "a": h.a, "b": h.b, "rule": h.rule_text} for h in HYPOTHESES])


def plan_body(manifest: StoreManifest, specs: Sequence[RunSpec], plugins: list[PluginIdentity]) -> PlanBody:
    """What a plan fixes for the runs `specs` of the store `manifest` describes."""
    return PlanBody(
        profile=manifest.profile.name,
        cohort={"source": manifest.data.source, "table_sha256": manifest.data.metadata_sha256,
                "image_list_sha256": manifest.data.image_list_sha256},
        configurations=_configurations(specs), plugins=plugins, run_ids=list(manifest.run_ids),
        rules=planned_rules(manifest.settings.evidence.rope),
        settings=manifest.settings.model_dump(mode="json"),
        test_sets=[PlannedTestSet(name=t.name, kind=t.kind, cases_sha256=t.cases_sha256, patients=t.support.patients,
                                  negative_patients=t.support.negative_patients) for t in manifest.test_sets],
        code_version=manifest.code_version)


def write_plan(body: PlanBody, path: Path) -> Plan:
    """Write `body` as a plan to `path`, stamped with the time and its sha256."""
    created = now()
    plan = Plan(sha256=canonical_sha256(created, body.model_dump(mode="json")), created_at=created, plan=body)
    write_atomically(path, plan.model_dump_json(indent=1).encode("utf-8"))
    return plan


def parse_plan(content: bytes, source: Path | str) -> Plan:
    """A plan from its file's bytes; PlanError naming the file when it is not one, or its sha256 does not match."""
    try:
        plan = Plan.model_validate_json(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PlanError(f"{source}: not a ctxray-bench plan ({where + ': ' if where else ''}{first['msg']})") from exc
    actual = canonical_sha256(plan.created_at, json.loads(content)["plan"])
    if actual != plan.sha256:
        raise PlanError(f"{source}: the plan's content does not match its sha256 {plan.sha256[:12]}... (it has "
                        f"{actual[:12]}...): edited after it was written")
    return plan


def load_plan(path: Path) -> tuple[Plan, bytes]:
    """A plan file and its bytes; PlanError naming it when it cannot be read, is no plan, or was edited."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the plan: {describe_os_error(exc)}") from exc
    return parse_plan(content, path), content


def differences(planned: PlanBody, now_body: PlanBody, *, plugins: bool = True) -> list[str]:
    """Every way `now_body` departs from `planned`, each named (the configuration, plugin, setting or hash)."""
    found = []
    for key in sorted(set(planned.cohort) | set(now_body.cohort)):
        if planned.cohort.get(key) != now_body.cohort.get(key):
            found.append(f"cohort {key}: planned {planned.cohort.get(key)}, now {now_body.cohort.get(key)}")
    before = {c.name: c for c in planned.configurations}
    after = {c.name: c for c in now_body.configurations}
    for name in sorted(set(before) | set(after)):
        if name not in after:
            continue  # a planned configuration without runs is named by the run ids below
        if name not in before:
            found.append(f"configuration {name}: not in the plan")
        elif before[name] != after[name]:
            changed = [f for f in PlannedConfiguration.model_fields
                       if f != "content_sha256" and getattr(before[name], f) != getattr(after[name], f)]
            if before[name].content_sha256 != after[name].content_sha256:
                changed.insert(0, f"what it trains (content sha256 {before[name].content_sha256[:12]}... planned, "
                                  f"{after[name].content_sha256[:12]}... now)")
            found.append(f"configuration {name}: {', '.join(changed)} differs from the plan (edited after it)")
    if plugins:
        planned_plugins = {(p.kind, p.name): p for p in planned.plugins}
        for p in now_body.plugins:
            old = planned_plugins.get((p.kind, p.name))
            if old is None:
                found.append(f"{p.kind} {p.name}: not in the plan")
            elif (old.distribution, old.version) != (p.distribution, p.version):
                found.append(f"{p.kind} {p.name}: {p.distribution} {p.version}, the plan fixed {old.distribution} "
                             f"{old.version}")
            elif old.files != p.files:
                edited = sorted(f for f in set(old.files) | set(p.files) if old.files.get(f) != p.files.get(f))
                found.append(f"{p.kind} {p.name}: source files differ from the plan ({', '.join(edited[:3])})")
    added = [r for r in now_body.run_ids if r not in set(planned.run_ids)]
    dropped = [r for r in planned.run_ids if r not in set(now_body.run_ids)]
    for what, ids in (("declared runs not in the plan", added), ("planned runs not declared", dropped)):
        if ids:
            found.append(f"{what}: {len(ids)} ({_some(ids)})")
    if planned.rules != now_body.rules:
        changed = [f for f in PlannedRules.model_fields if getattr(planned.rules, f) != getattr(now_body.rules, f)]
        found.append(f"rules: {', '.join(changed)} differ from the plan")
    old_settings, new_settings = dict(flat_items(planned.settings)), dict(flat_items(now_body.settings))
    for key in sorted(set(old_settings) | set(new_settings)):
        if old_settings.get(key) != new_settings.get(key):
            found.append(f"setting {key}: planned {_setting(old_settings, key)}, now {_setting(new_settings, key)}")
    if planned.test_sets != now_body.test_sets:
        found.append(f"test sets: planned {[t.name for t in planned.test_sets]} ({_cases(planned)}), now "
                     f"{[t.name for t in now_body.test_sets]} ({_cases(now_body)})")
    if planned.profile != now_body.profile:
        found.append(f"profile: planned {planned.profile}, now {now_body.profile}")
    if planned.code_version != now_body.code_version:
        found.append(f"code version: planned {planned.code_version}, now {now_body.code_version}")
    return found


def _setting(flat: dict[str, Any], key: str) -> str:
    return repr(flat[key]) if key in flat else "its default"


def _cases(body: PlanBody) -> str:
    return ", ".join(f"{t.name} cases {t.cases_sha256[:12]}" for t in body.test_sets) or "none"


def _some(ids: Sequence[str]) -> str:
    return ", ".join(ids[:SHOWN]) + (f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else "")


def refusals(found: Sequence[str]) -> list[str]:
    """The differences that stop `run --plan`: all but a new code version (stored, and listed as a deviation)."""
    return [d for d in found if not d.startswith("code version:")]


@dataclass(frozen=True)
class PlanAdmission:
    """What `run --plan` checks its runs against, and the plan file it stores beside them."""

    plan: Plan
    content: bytes
    source: Path

    def admit(self, manifest: StoreManifest, specs: list[RunSpec]) -> StoreManifest:
        """`manifest` stamped with the plan; PlanError in one line naming every difference that stops the run."""
        try:
            body = plan_body(manifest, specs, plugin_identities(specs))
        except RegistryError as exc:
            raise PlanError(f"{self.source}: {exc}") from exc
        stopping = refusals(differences(self.plan.plan, body))
        if stopping:
            raise PlanError(f"{self.source}: this run differs from its plan {self.plan.sha256[:12]}... in "
                            f"{len(stopping)} way(s): {'; '.join(stopping)}; run what was planned, or write a new plan "
                            "(and report the deviation)")
        return manifest.model_copy(update={"plan": self.plan.stamp})


class PlanStatus(BaseModel):
    """The report's pre-registration line: the plan a store names, and every deviation from it by name."""

    registered: bool
    sha256: str | None = None
    created_at: str | None = None
    deviations: list[str] = Field(default_factory=list)


def store_plan_status(root: Path, manifest: StoreManifest, records: Sequence[RunRecord]) -> PlanStatus:
    """Whether a store was pre-registered, and every way it departs from its plan."""
    # the plan file, the store's cohort, configurations, run ids, rules, settings and test sets against it, and every
    # run not made under it
    if manifest.plan is None:
        return PlanStatus(registered=False)
    status = PlanStatus(registered=True, sha256=manifest.plan.sha256, created_at=manifest.plan.created_at)
    path = root / PLAN_FILE
    try:
        plan, _ = load_plan(path)
    except PlanError as exc:
        status.deviations.append(str(exc))
        return status
    if plan.sha256 != manifest.plan.sha256:
        status.deviations.append(f"{PLAN_FILE} is plan {plan.sha256[:12]}..., the store names "
                                 f"{manifest.plan.sha256[:12]}...")
    specs = [r.spec for r in records]
    status.deviations += differences(plan.plan, plan_body(manifest, specs, []), plugins=False)
    outside = [r.spec.run_id for r in records if r.plan is None or r.plan.sha256 != plan.sha256]
    if outside:
        status.deviations.append(f"runs not made under the plan: {len(outside)} ({_some(outside)})")
    other_code = [r.spec.run_id for r in records if r.code_version != plan.plan.code_version]
    if other_code:
        status.deviations.append(f"runs by another code version than the plan's {plan.plan.code_version}: "
                                 f"{len(other_code)} ({_some(other_code)})")
    return status
