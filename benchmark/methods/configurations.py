"""The configurations of PROTOCOL.md section 5 as validated data (benchmark/configs/configurations.toml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, model_validator

from benchmark.config import read_toml, validation_problems
from benchmark.errors import ConfigError
from benchmark.methods.losses import LossConfig
from benchmark.methods.models import NetworkConfig
from benchmark.methods.training import TrainingConfig
from benchmark.schemas import ManifestName, Modality

DEFAULT_CONFIGURATIONS = Path(__file__).parent.parent / "configs" / "configurations.toml"


class TeacherConfig(BaseModel):
    """A teacher: the modality it reads, its network and its own training schedule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: Modality
    network: NetworkConfig
    training: TrainingConfig = Field(default_factory=TrainingConfig)


class Configuration(BaseModel):
    """One row of the configuration table: what is trained, on what, with which teacher and loss."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    role: str
    tier: int | None = Field(default=None, description="1-3 for paired configurations, None for references")
    kind: Literal["classifier", "late-fusion"] = "classifier"
    manifest: ManifestName
    network: NetworkConfig
    teacher: TeacherConfig | None = None
    loss: LossConfig = Field(default_factory=LossConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    candidate: bool = Field(default=False, exclude_if=lambda flag: not flag,
                            description="a method under test: added to the matrix and compared with the protocol's "
                                        "controls (student-only, same-modality-kd, late-fusion, plain-ct-kd)")

    @model_validator(mode="before")
    @classmethod
    def _drop_derived_fields(cls, data: Any) -> Any:
        """Accept a dump of itself: derived (computed) fields are recomputed, never read back."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in cls.model_computed_fields}
        return data

    @model_validator(mode="after")
    def _coherent(self) -> Configuration:
        if self.kind == "late-fusion" and (self.teacher is not None or self.manifest != "paired"):
            raise ValueError(f"{self.name}: late fusion is trained on the paired manifest without a teacher")
        if self.teacher is not None and self.manifest != "paired":
            raise ValueError(f"{self.name}: distillation needs the paired manifest")
        if self.candidate and (self.manifest != "paired" or self.kind != "classifier"):
            raise ValueError(f"{self.name}: a candidate is a deployable model: a classifier on the paired manifest")
        if self.teacher is None and self.loss.needs_teacher:
            raise ValueError(f"{self.name}: attention transfer, hints and declared distillation terms need a teacher")
        if self.teacher is not None and self.network.architecture == self.teacher.network.architecture == "cnn":
            stages = {f"stage{i}" for i in range(1, min(len(self.network.widths),
                                                        len(self.teacher.network.widths)) + 1)}
            wanted = set(self.loss.attention_stages if self.loss.attention_weight > 0 else ())
            wanted |= {self.loss.hint_stage} if self.loss.hint_weight > 0 else set()
            if wanted - stages:
                raise ValueError(f"{self.name}: stages {sorted(wanted - stages)} missing in student or teacher")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def input_modality(self) -> Modality:
        """The modality of the images the model is trained and evaluated on."""
        return "ct" if self.manifest == "all-ct" else "xray"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def inference_inputs(self) -> tuple[Modality, ...]:
        """Every modality the model reads at inference; only late fusion reads two."""
        return ("xray", "ct") if self.kind == "late-fusion" else (self.input_modality,)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reads_ct_at_inference(self) -> bool:
        """True for late fusion (and the all-CT reference): such a model is never a deployable X-ray model."""
        return "ct" in self.inference_inputs

    @computed_field  # type: ignore[prop-decorator]
    @property
    def deployable(self) -> bool:
        """A paired configuration that reads X-ray only at inference (the protocol's deployed model)."""
        return self.manifest == "paired" and self.inference_inputs == ("xray",)

    def content(self) -> dict[str, Any]:
        """What is trained, without the names it is known by (name, role, tier, candidate): the part run ids hash."""
        return self.model_dump(mode="json", exclude={"name", "role", "tier", "candidate"})

    def with_overrides(self, name: str, overrides: dict[str, Any]) -> Configuration:
        """A variant of this configuration under a new name, with nested fields replaced (validated)."""
        data = self.model_dump()
        return Configuration.model_validate(merge_overrides(data, {**overrides, "name": name}))


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; override values win."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve_network(spec: Any, networks: dict[str, dict[str, Any]], where: str) -> dict[str, Any]:
    """`"student"` or `{ base = "student", dfpn = true }` -> the network table with overrides applied."""
    if isinstance(spec, str):
        spec = {"base": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: network must be a name or a table, got {spec!r}")
    spec = dict(spec)
    base = spec.pop("base", None)
    if base is not None and base not in networks:
        raise ConfigError(f"{where}: unknown network {base!r}; declared: {', '.join(networks)}")
    return merge_overrides(networks.get(base, {}) if base else {}, spec)


def load_configurations(path: Path | str | None = None) -> dict[str, Configuration]:
    """Read the configuration table (name -> Configuration); ConfigError naming file and entry when invalid."""
    source = Path(path) if path is not None else DEFAULT_CONFIGURATIONS
    return _parse_table(read_toml(source, "configuration table"), source)


def with_added_configurations(path: Path | str | None) -> dict[str, Configuration]:
    """The packaged configurations plus those of the file at `path` (its [networks] and [defaults] extend the
    packaged ones for its own entries). A name the packaged table has may only be repeated with the same content:
    the protocol's controls cannot be redefined under their own names."""
    base = read_toml(DEFAULT_CONFIGURATIONS, "configuration table")
    packaged = _parse_table(base, DEFAULT_CONFIGURATIONS)
    if path is None:
        return packaged
    source = Path(path)
    extra = read_toml(source, "configuration table")
    merged = {"networks": {**base.get("networks", {}), **extra.get("networks", {})},
              "defaults": merge_overrides(base.get("defaults", {}), extra.get("defaults", {})),
              "configurations": extra.get("configurations", [])}
    added = _parse_table(merged, source)
    for name, configuration in added.items():
        if name in packaged and packaged[name] != configuration:
            raise ConfigError(f"{source}: configuration {name!r} redefines the packaged one; give it another name")
    merged_table = {**packaged, **added}
    for name, configuration in added.items():
        if not configuration.candidate or name in packaged:
            continue
        twin = next((other for other, c in merged_table.items()
                     if other != name and c.content() == configuration.content()), None)
        if twin is not None:
            raise ConfigError(f"{source}: candidate {name!r} trains exactly what {twin!r} trains (only its name, role "
                              f"or tier differ), so its runs would be {twin!r}'s and it could not be compared with "
                              "it; change what it trains or remove it")
    return merged_table


def _parse_table(raw: dict[str, Any], source: Path) -> dict[str, Configuration]:
    networks = raw.get("networks", {})
    defaults = raw.get("defaults", {})
    result: dict[str, Configuration] = {}
    for index, entry in enumerate(raw.get("configurations", [])):
        where = f"{source}: configurations[{index}] ({entry.get('name', '?')})"
        data = dict(entry)
        data["network"] = _resolve_network(data.get("network", {}), networks, where)
        data["training"] = merge_overrides(defaults.get("training", {}), data.get("training", {}))
        data["loss"] = merge_overrides(defaults.get("loss", {}), data.get("loss", {}))
        if isinstance(data.get("teacher"), dict):
            teacher = dict(data["teacher"])
            teacher["network"] = _resolve_network(teacher.get("network", {}), networks, where + ".teacher")
            teacher["training"] = merge_overrides(defaults.get("training", {}), teacher.get("training", {}))
            data["teacher"] = teacher
        try:
            configuration = Configuration.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {validation_problems(exc)}") from exc
        if configuration.name in result:
            raise ConfigError(f"{where}: configuration name {configuration.name!r} is declared twice")
        result[configuration.name] = configuration
    if not result:
        raise ConfigError(f"{source}: no [[configurations]] declared")
    return result
