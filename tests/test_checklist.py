"""The report's CLAIM 2024 checklist: packaged data, every item answered or "not addressed", anchors that exist."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from benchmark.errors import ConfigError
from benchmark.report.checklist import load_checklist, parse_checklist
from benchmark.report.render import template_environment

ANSWERED = """
[[item]]
number = 7
topic = "Methods: Data"
item = "Data sources"
answered_by = [{anchor = "cohort-source", what = "source table and sha256"}]
"""
NOT_ADDRESSED = """
[[item]]
number = 13
topic = "Methods: Data"
item = "Image acquisition protocol"
not_addressed = "the source tables carry no acquisition parameters"
"""


class _Ids(HTMLParser):
    """Collects the id of every element of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.ids.update(value for name, value in attrs if name == "id" and value)


def ids_of(html: str) -> set[str]:
    parser = _Ids()
    parser.feed(html)
    return parser.ids


def render_checklist(text: str) -> str:
    return template_environment().get_template("checklist.html.j2").render(checklist=parse_checklist(text))


def test_the_packaged_checklist_loads_and_its_item_numbers_are_unique() -> None:
    numbers = [item.number for item in load_checklist()]
    assert numbers and len(numbers) == len(set(numbers))
    assert all(1 <= n <= 44 for n in numbers)  # CLAIM 2024 has 44 items


def test_every_item_is_either_answered_by_report_sections_or_marked_not_addressed_with_a_reason() -> None:
    for item in load_checklist():
        assert (item.answered_by is None) != (item.not_addressed is None), item.number
        assert item.answered_by is None or all(a.anchor and a.what for a in item.answered_by), item.number
        assert item.not_addressed is None or item.not_addressed.strip(), item.number


def test_every_anchor_the_checklist_names_is_an_id_in_a_rendered_report(synthetic_store: Path) -> None:
    html = (synthetic_store / "report.html").read_text(encoding="utf-8")
    ids = ids_of(html)
    assert {"checklist", "checklist-table"} <= ids
    named = [(a.anchor, item.number) for item in load_checklist() for a in item.answered_by or []]
    assert [f"#{anchor} (item {number})" for anchor, number in named if anchor not in ids] == []


def test_an_item_not_addressed_renders_as_not_addressed_with_its_reason() -> None:
    html = render_checklist(NOT_ADDRESSED)
    row = html[html.index('<tr data-item="13">'):]
    row = row[:row.index("</tr>")]
    assert 'class="not-addressed"' in row and "not addressed" in row
    assert "the source tables carry no acquisition parameters" in row and "<a href" not in row


def test_an_answered_item_renders_a_link_to_each_section_that_answers_it() -> None:
    html = render_checklist(ANSWERED)
    assert '<a href="#cohort-source">source table and sha256</a>' in html and "not addressed" not in html


@pytest.mark.parametrize(("text", "message"), [
    (ANSWERED + ANSWERED, r"item 7 appears twice"),
    (ANSWERED + 'not_addressed = "no reason"\n',
     r"item 7: needs exactly one of answered_by and not_addressed, not both"),
    (ANSWERED.replace('answered_by = [{anchor = "cohort-source", what = "source table and sha256"}]', ""),
     r"item 7: needs exactly one of answered_by and not_addressed, found neither"),
    (ANSWERED.replace('"cohort-source"', '"#cohort source"'), r"item 7: answered_by\.0\.anchor: .*not an element id"),
    (ANSWERED.replace('"cohort-source"', '""'), r"item 7: answered_by\.0\.anchor: .*not an element id"),
], ids=["duplicate number", "both fields", "neither field", "anchor not an id", "empty anchor"])
def test_a_broken_checklist_is_refused_with_an_error_naming_the_item(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_checklist(text)
