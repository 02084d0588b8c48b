"""The HTML leaderboard: deterministic, self-contained, and it renders in headless Chromium with
every model of the results folder and no console errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from optional import chromium, import_or_skip, missing
from test_results import record

from eqbench.cli import main
from eqbench.results.html import to_html
from eqbench.results.publish import stale, write_all
from eqbench.results.records import load_results, write_result

CHROMIUM = chromium()
MODELS = ("pixels", "vicreg <demo>", "tir+vicreg")


def results(tmp_path: Path) -> Path:
    out = tmp_path / "results"
    for i, model in enumerate(MODELS):
        for j, task in enumerate(("rotation", "colour", "blur")):
            write_result(record(model, f"synthetic/{task}", 0.1 * (i + j)), out)
        write_result(record(model, "classification/knn", 0.5 + 0.1 * i, metric="top1_k20"), out)
    return out


def test_html_is_deterministic_and_self_contained(tmp_path: Path) -> None:
    folder = results(tmp_path)
    page = to_html(folder)
    assert page == to_html(folder)
    assert page.count("<svg") == 2
    assert "<script" not in page and "src=" not in page and "<link" not in page  # nothing fetched
    assert "vicreg &lt;demo&gt;" in page  # escaped


def test_write_and_check(tmp_path: Path) -> None:
    folder = results(tmp_path)
    assert stale(folder) == ["leaderboard.md", "leaderboard.csv", "leaderboard.html"]
    write_all(folder)
    assert stale(folder) == []
    runner = CliRunner()
    assert (
        runner.invoke(main, ["leaderboard", "--results-dir", str(folder), "--check"]).exit_code == 0
    )
    write_result(record("late", "synthetic/rotation", 0.2), folder)  # a new result arrives
    result = runner.invoke(main, ["leaderboard", "--results-dir", str(folder), "--check"])
    assert result.exit_code == 1 and "leaderboard.md" in result.output


REPO_RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("which", ["fixture", "committed"])
def test_opens_in_headless_chromium(which: str, tmp_path: Path) -> None:
    missing("chromium", None if CHROMIUM else "needs Chromium (apt-get install chromium)")
    sync_api = import_or_skip("playwright", "playwright.sync_api")
    if which == "fixture":
        folder = results(tmp_path)
        page_file = tmp_path / "leaderboard.html"
        page_file.write_text(to_html(folder), encoding="utf-8")
        expected = sorted(MODELS)
    else:  # the committed results/leaderboard.html shows every model of results/
        folder, page_file = REPO_RESULTS, REPO_RESULTS / "leaderboard.html"
        expected = sorted({r["model_id"] for r in load_results(folder)})
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_file.as_uri())
        shown = page.locator("#leaderboard tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.model)"
        )
        svgs = page.locator("figure svg").count()
        shot = tmp_path / "leaderboard.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert sorted(shown) == expected
    assert svgs == (2 if expected else 0)
    assert shot.stat().st_size > 10_000
