"""The experiment matrix as data (benchmark/configs/matrix.toml) and its expansion into run specifications.

Keeping the matrix as data makes every run declared, reviewable and identified by its content, not by its block.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from benchmark.config import Settings, read_toml, validation_problems
from benchmark.errors import ConfigError
from benchmark.methods.configurations import Configuration, merge_overrides
from benchmark.schemas import OPTIONAL_REGIMES, Regime, RegimeName, Split

# Expansion order for each block: configuration (with the profile's training overrides) -> variant overrides -> grid
# values -> every split of every regime -> every seed. A run specification's id is the sha256 of its configuration
# content (name and role excluded), split and seed, so the same run declared by two blocks (e.g. `progressive-plain`
# and `plain-ct-kd`) is one run that carries both names and both blocks.

DEFAULT_MATRIX = Path(__file__).parent.parent / "configs" / "matrix.toml"
REFERENCE = "reference"  # a block's word for each configuration's own reference regime (by its manifest)
BlockRegime = Literal["reference"] | RegimeName
_REFERENCE_REGIME = {"all-xray": RegimeName.REFERENCE_ALL_XRAY, "all-ct": RegimeName.REFERENCE_ALL_CT}


class Variant(BaseModel):
    """A named configuration derived from a base one by nested overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str
    base: str
    overrides: dict[str, Any] = Field(default_factory=dict)


class Block(BaseModel):
    """A group of runs with one purpose: configurations/variants x grid x regimes x seeds."""

    model_config = ConfigDict(extra="forbid")

    name: str
    purpose: str
    configurations: list[str] = Field(default_factory=list)
    variants: list[Variant] = Field(default_factory=list)
    regimes: list[BlockRegime] = Field(min_length=1, description="'reference' or a paired regime")
    seeds: list[int] | None = Field(default=None, description="replaces each regime's training seeds")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted path -> values, crossed")

    @field_validator("regimes")
    @classmethod
    def _reference_by_its_word(cls, regimes: list[BlockRegime]) -> list[BlockRegime]:
        named = [r for r in regimes if r in _REFERENCE_REGIME.values()]
        if named:
            raise ValueError(f"{str(named[0])!r}: a block names a configuration's reference regime as 'reference'")
        return regimes


class Profile(BaseModel):
    """A named experiment matrix, with settings and training overrides that apply to all its runs."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    settings: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict, description="overrides of every student's training")
    teacher_training: dict[str, Any] = Field(default_factory=dict, description="overrides of every teacher's")
    blocks: list[Block] = Field(min_length=1)
    candidates: list[str] = Field(default_factory=list, exclude_if=lambda names: not names,  # stores stay as before
                                  description="configurations of the packaged table that join this profile as "
                                              "candidates, beside those a --configurations file marks candidate")

    def apply_settings(self, settings: Settings, source: str = "the settings") -> Settings:
        """The run settings: `settings` (read from `source`) with this profile's overrides; ConfigError in one line
        naming both when they conflict (e.g. validation_negatives above the profile's k)."""
        try:
            return Settings.model_validate(merge_overrides(settings.model_dump(), self.settings))
        except ValidationError as exc:
            sets = ", ".join(f"{key} = {value!r}" for key, value in flat_items(self.settings)) or "nothing"
            raise ConfigError(f"{source} conflicts with profile {self.name!r} (which sets {sets}): "
                              f"{validation_problems(exc)}") from exc


class Declaration(BaseModel):
    """A block that declared a run, and the name it declared it under."""

    model_config = ConfigDict(frozen=True)

    block: str
    name: str


class RunSpec(BaseModel):
    """One run to execute: a configuration on a split with a seed, with every (block, name) that declared it."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    declarations: tuple[Declaration, ...] = Field(min_length=1)
    regime: str
    configuration: Configuration
    split: Split
    seed: int

    @property
    def names(self) -> tuple[str, ...]:
        """Every name this run was declared under, first declaration first."""
        return tuple(dict.fromkeys(d.name for d in self.declarations))

    @property
    def blocks(self) -> tuple[str, ...]:
        """Every block that declared this run."""
        return tuple(dict.fromkeys(d.block for d in self.declarations))

    @property
    def name(self) -> str:
        """The first name this run was declared under."""
        return self.declarations[0].name


def run_id(configuration: Configuration, split: Split, seed: int) -> str:
    """Stable id: sha256 of the configuration's content (not its name), the split and the seed."""
    identity = {"configuration": configuration.content(), "split": split.model_dump(mode="json", exclude={"split_id"}),
                "seed": seed}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:20]


EXHAUSTIVE_REGIME = RegimeName.PAIRED_EXHAUSTIVE


CANDIDATE_BLOCK = "candidates"
CANDIDATE_REGIMES: list[BlockRegime] = [RegimeName.PAIRED_FIXED, RegimeName.PAIRED_MONTE_CARLO]


def with_candidates(profile: Profile, configurations: Mapping[str, Configuration]
                    ) -> tuple[Profile, dict[str, Configuration]]:
    """`profile` with its candidates added, and the configurations with each of them marked candidate: those marked
    `candidate = true` (a --configurations file's) and those the profile names. They run in a `candidates` block on
    the paired fixed split and the Monte Carlo resamples (where the hypotheses are decided), on the k-fold regime when
    the profile runs one (where the gate is decided), and in the training-length block when the profile has one."""
    configurations = dict(configurations)
    for name in profile.candidates:
        if name not in configurations:
            raise ConfigError(f"profile {profile.name!r}: candidate {name!r} is not a declared configuration "
                              f"(declared: {', '.join(configurations)})")
        try:
            configurations[name] = Configuration.model_validate({**configurations[name].model_dump(),
                                                                 "candidate": True})
        except ValidationError as exc:
            raise ConfigError(f"profile {profile.name!r}: candidate {name!r}: {validation_problems(exc)}") from exc
    candidates = [name for name, c in configurations.items() if c.candidate]
    if not candidates:
        return profile, configurations
    kfold = [RegimeName.PAIRED_KFOLD] if RegimeName.PAIRED_KFOLD in optional_regimes(profile) else []
    block = Block(name=CANDIDATE_BLOCK, purpose="candidate methods, each compared with the protocol's controls",
                  configurations=candidates, regimes=[*CANDIDATE_REGIMES, *kfold])
    blocks = []
    for existing in profile.blocks:
        if existing.name == "training-length":  # candidates first, so that their runs carry their own names first
            blocks.append(block)
            added = [c for c in candidates if c not in existing.configurations]
            existing = existing.model_copy(update={"configurations": [*existing.configurations, *added]})
        blocks.append(existing)
    if block not in blocks:
        blocks.append(block)
    return profile.model_copy(update={"blocks": blocks}), configurations


def optional_regimes(profile: Profile) -> frozenset[RegimeName]:
    """The optional regimes (exhaustive, k-fold) some block of `profile` runs on, which are then built (they are not
    by default)."""
    return frozenset(r for block in profile.blocks for r in block.regimes if r in OPTIONAL_REGIMES)


def load_profile(name: str, path: Path | str | None = None) -> Profile:
    """The named profile of the matrix file (default: the packaged one); ConfigError when absent or invalid."""
    source = Path(path) if path is not None else DEFAULT_MATRIX
    raw = read_toml(source, "experiment matrix")
    profiles = raw.get("profiles", {})
    if name not in profiles:
        raise ConfigError(f"{source}: no profile {name!r}; declared: {', '.join(profiles) or 'none'}")
    try:
        return Profile.model_validate({"name": name, **profiles[name]})
    except ValidationError as exc:
        raise ConfigError(f"{source}: profile {name!r}: {validation_problems(exc)}") from exc


def _dotted(path: str, value: Any) -> dict[str, Any]:
    """'loss.temperature', 2.0 -> {'loss': {'temperature': 2.0}}."""
    result: Any = value
    for key in reversed(path.split(".")):
        result = {key: result}
    return result


def _grid_name(base: str, combination: dict[str, Any]) -> str:
    if not combination:
        return base
    return base + "@" + ",".join(f"{path.rsplit('.', 1)[-1]}={value}" for path, value in combination.items())


def _block_configurations(block: Block, profile: Profile, configurations: dict[str, Configuration]
                          ) -> list[Configuration]:
    """The block's configurations and variants after profile overrides, crossed with its grid."""
    where = f"profile {profile.name!r}, block {block.name!r}"

    def base(name: str) -> Configuration:
        if name not in configurations:
            raise ConfigError(f"{where}: unknown configuration {name!r}")
        config = configurations[name]
        overrides: dict[str, Any] = {"training": profile.training} if profile.training else {}
        if config.teacher is not None and profile.teacher_training:
            overrides["teacher"] = {"training": profile.teacher_training}
        return config.with_overrides(name, overrides) if overrides else config

    declared = [(name, base(name), {}) for name in block.configurations]
    declared += [(v.name, base(v.base), v.overrides) for v in block.variants]
    paths = list(block.grid)
    combinations = [dict(zip(paths, values, strict=True)) for values in itertools.product(*block.grid.values())]
    result = []
    for name, config, overrides in declared:
        for combination in combinations:
            merged = dict(overrides)
            for path, value in combination.items():
                merged = merge_overrides(merged, _dotted(path, value))
            try:
                result.append(config.with_overrides(_grid_name(name, combination), merged) if merged or
                              name != config.name else config)
            except ValidationError as exc:
                raise ConfigError(f"{where}: {name} {combination or ''}: {exc.errors()[0]['msg']}") from exc
    return result


def block_names(profile: Profile, specs: list[RunSpec]) -> dict[str, list[str]]:
    """Block name -> the configuration names it declared, in declaration order."""
    names: dict[str, list[str]] = {block.name: [] for block in profile.blocks}
    for spec in specs:
        for d in spec.declarations:
            if d.name not in names.setdefault(d.block, []):
                names[d.block].append(d.name)
    return names


def expand_profile(profile: Profile, configurations: dict[str, Configuration], regimes: list[Regime],
                   unavailable: Mapping[str, str] | None = None) -> list[RunSpec]:
    """Every run of the profile, deduplicated by run id, in declaration order.

    `unavailable` (regime -> why it could not be drawn, as `prepare_data` reports it) makes the error of a block
    that needs such a regime say why."""
    by_name = {r.name: r for r in regimes}
    why_not = unavailable or {}
    specs: dict[str, RunSpec] = {}
    for block in profile.blocks:
        for config in _block_configurations(block, profile, configurations):
            for regime_name in block.regimes:
                actual = _REFERENCE_REGIME.get(config.manifest, "") if regime_name == REFERENCE else regime_name
                regime = by_name.get(actual)
                if regime is None:
                    reason = why_not.get(actual)
                    raise ConfigError(f"profile {profile.name!r}, block {block.name!r}: regime "
                                      f"{str(actual or regime_name)!r} for {config.name} is not available on this "
                                      "cohort" + (f": {reason}" if reason else ""))
                if regime.manifest != config.manifest:
                    raise ConfigError(f"block {block.name!r}: {config.name} trains on {config.manifest}, "
                                      f"regime {regime.name} splits {regime.manifest}")
                for split in regime.splits:
                    for seed in block.seeds if block.seeds is not None else regime.seeds_for(split):
                        rid = run_id(config, split, seed)
                        declaration = Declaration(block=block.name, name=config.name)
                        known = specs.get(rid)
                        if known is None:
                            specs[rid] = RunSpec(run_id=rid, declarations=(declaration,), regime=regime.name,
                                                 configuration=config, split=split, seed=seed)
                        elif declaration not in known.declarations:
                            specs[rid] = known.model_copy(
                                update={"declarations": (*known.declarations, declaration)})
    return list(specs.values())


def flat_items(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested table as (dotted.key, value) pairs."""
    pairs: list[tuple[str, Any]] = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            pairs += flat_items(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs
