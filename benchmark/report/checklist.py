"""The report's reporting checklist: which section of the report answers each applicable CLAIM 2024 item.

The mapping is data (checklist.toml, shipped with the package); this module reads and validates it.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark.errors import ConfigError

# A broken checklist.toml is refused with a ConfigError naming the item at fault.

CHECKLIST_FILE = "checklist.toml"
HTML_ID = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # the ids the report's templates write: no spaces, no '#'


class Answer(BaseModel):
    """One place in the report that answers an item: the id of its element and what that element shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    anchor: str
    what: str = Field(min_length=1)

    @field_validator("anchor")
    @classmethod
    def _is_an_id(cls, value: str) -> str:
        """An anchor is an HTML id: a letter, then letters, digits, '-' or '_'."""
        if not HTML_ID.fullmatch(value):
            raise ValueError(f"anchor {value!r} is not an element id (a letter, then letters, digits, '-' or '_')")
        return value


class ChecklistItem(BaseModel):
    """One CLAIM 2024 item: the report's sections that answer it, or why the report does not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    number: int = Field(ge=1, description="the item's number in CLAIM 2024")
    topic: str = Field(min_length=1, description="CLAIM's section, e.g. 'Methods: Data'")
    item: str = Field(min_length=1, description="a short paraphrase of the item")
    answered_by: list[Answer] | None = Field(default=None, min_length=1)
    not_addressed: str | None = Field(default=None, min_length=1, description="why the report does not answer it")

    @model_validator(mode="after")
    def _answered_or_not(self) -> ChecklistItem:
        """Exactly one of answered_by and not_addressed."""
        if (self.answered_by is None) == (self.not_addressed is None):
            raise ValueError("needs exactly one of answered_by and not_addressed, "
                             + ("not both" if self.answered_by is not None else "found neither"))
        return self


def _reasons(error: ValidationError) -> str:
    """Pydantic's errors in one line: field and message each."""
    parts = []
    for e in error.errors():
        where = ".".join(str(p) for p in e["loc"])
        message = str(e["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def parse_checklist(text: str, source: str = CHECKLIST_FILE) -> list[ChecklistItem]:
    """The items of a checklist's TOML text; ConfigError naming the item (its number, else its position)."""
    try:
        table: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    entries = table.get("item")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: no [[item]] table")
    items: list[ChecklistItem] = []
    first: dict[int, int] = {}
    for position, entry in enumerate(entries, 1):
        number = entry.get("number") if isinstance(entry, dict) else None
        name = f"item {number}" if number is not None else f"[[item]] number {position} of the file"
        try:
            item = ChecklistItem.model_validate(entry)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {name}: {_reasons(exc)}") from exc
        if item.number in first:
            raise ConfigError(f"{source}: item {item.number} appears twice (the [[item]] tables number "
                              f"{first[item.number]} and {position} of the file)")
        first[item.number] = position
        items.append(item)
    return items


def load_checklist() -> list[ChecklistItem]:
    """The packaged checklist (benchmark/report/checklist.toml), validated."""
    resource = resources.files("benchmark.report").joinpath(CHECKLIST_FILE)
    try:
        text = resource.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{resource}: the reporting checklist cannot be read: {exc}") from exc
    return parse_checklist(text, str(resource))
