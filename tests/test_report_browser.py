"""The report in a real browser: headless Chromium (Debian) driven by Playwright."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from benchmark.report.render import report_data_from_html

SECTIONS = ("question", "cohort", "regimes", "references", "fixed", "monte-carlo", "test-sets", "stress", "hypotheses",
            "methods", "provenance")
VIEWPORT = {"width": 1280, "height": 900}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _chromium() -> str:
    """Debian's Chromium (the README's test command installs it); skipped only where it is absent."""
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("the playwright package is not installed (it is part of the test extra: pip install -e '.[test]')")
    return path


def test_the_report_renders_every_section_and_figure_without_console_errors(synthetic_store: Path) -> None:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    report = synthetic_store / "report.html"
    island = report_data_from_html(report.read_text())
    expected_figures = len(island["figure_runs"]) + (1 if island.get("power") else 0)
    artifacts = Path(os.environ.get("CTXRAY_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(report.as_uri(), wait_until="load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.alt])")
            present = [s for s in SECTIONS if page.query_selector(f"section#{s}") is not None]
            statuses = page.eval_on_selector_all("section#hypotheses h3 [data-status]",
                                                 "els => els.map(e => e.textContent)")
            page.screenshot(path=str(artifacts / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert len(images) == expected_figures > 0
    assert all(complete and width > 0 for complete, width, _ in images), f"broken images: {images}"
    assert present == list(SECTIONS)
    assert len(statuses) == 5
    assert (artifacts / "report.png").stat().st_size > 10_000


def on_the_first_screen(report: Path, keys: list[str]) -> tuple[list[str], dict[str, str]]:
    """Open `report` in a screenshot-sized viewport: the data-evidence keys of the first screen's table that are not
    fully visible without scrolling, and the text each key shows there; a screenshot of that screen is kept."""
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    artifacts = Path(os.environ.get("CTXRAY_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(report.as_uri(), wait_until="load")
            boxes = {key: page.locator(f'#answer [data-evidence="{key}"]').bounding_box() for key in keys}
            texts = {key: page.locator(f'#answer [data-evidence="{key}"]').inner_text() for key in keys}
            page.screenshot(path=str(artifacts / f"first-screen-{report.parent.name}.png"))
        finally:
            browser.close()
    hidden = [key for key, box in boxes.items()
              if box is None or box["y"] < 0 or box["y"] + box["height"] > VIEWPORT["height"]]
    return hidden, texts


def test_the_first_screen_shows_every_headline_status_beside_its_test_statuses(synthetic_store: Path) -> None:
    report = synthetic_store / "report.html"
    evidence = report_data_from_html(report.read_text())["evidence"]
    names = [t["test_set"] for t in evidence["test_sets"]]
    assert names, "the synthetic store has no test set"
    keys = [f"{h['hypothesis']}:status" for h in evidence["hypotheses"]]
    keys += [f"{h['hypothesis']}:test:{name}:status" for name in names for h in evidence["hypotheses"]]
    hidden, texts = on_the_first_screen(report, keys)
    assert hidden == [], f"not on the first screen ({VIEWPORT}): {hidden}"
    statuses = {t["test_set"]: {h["hypothesis"]: h["status"] for h in t["hypotheses"]} for t in evidence["test_sets"]}
    for key, text in texts.items():
        hypothesis, *rest = key.split(":")
        expected = (statuses[rest[1]][hypothesis] if rest[0] == "test" else
                    next(h["status"] for h in evidence["hypotheses"] if h["hypothesis"] == hypothesis))
        assert text == expected, f"{key}: the first screen shows {text!r}, the evidence {expected!r}"
    support = re.sub(r"\s+", " ", report.read_text().split('id="answer-support">', 1)[1].split("</p>", 1)[0])
    assert re.search(r"\d+ paired patients \(\d+ negative\), \d+ Monte Carlo resamples", support), support
