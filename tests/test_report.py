"""``autolabel report`` after a real two-round loop, loaded from disk in a headless Chromium."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from autolabel.cli.app import app
from tests.browser import find_chromium, load_page
from tests.test_loop_e2e import _env, _loop_args, _scenes_workspace

pytestmark = pytest.mark.studio


def _chromium() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("AUTOLABEL_REQUIRE_BROWSER") == "1":
            pytest.fail("AUTOLABEL_REQUIRE_BROWSER=1 but no Chromium found (apt-get install chromium)")
        pytest.skip("no Chromium found (apt-get install chromium; scripts/setup.sh does it as root)")
    return found


def test_report_after_two_round_loop_opens_clean_in_chromium(studio_server, tmp_path, monkeypatch):
    chromium = _chromium()
    for key, value in _env(studio_server).items():
        monkeypatch.setenv(key, value)
    ws, scenes = _scenes_workspace(studio_server, tmp_path, "report-e2e")
    assert (
        CliRunner().invoke(app, ["init", "--images", str(scenes / "images"), "-w", str(ws.root)]).exit_code
        == 0
    )
    result = CliRunner().invoke(app, _loop_args(ws, scenes))
    assert result.exit_code == 0, result.output
    page = ws.root / "report.html"
    assert page.is_file()  # the loop writes it after every round
    page.unlink()

    result = CliRunner().invoke(app, ["report", "-w", str(ws.root)])
    assert result.exit_code == 0, result.output
    assert f"report: {page} (2 rounds" in result.output
    html = page.read_text()
    for section in (
        "Active-learning rounds", "Precision and recall at the operating threshold", "Confusion matrix",
        "Where the student is wrong", "Pre-labels and what humans changed", "Grouping and leaks",
    ):  # fmt: skip
        assert section in html, section
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch

    loaded = load_page(page, tmp_path / "report.png", executable=chromium)
    assert loaded["failed_requests"] == [] and loaded["console_errors"] == [] and loaded["exceptions"] == []
    assert loaded["broken"] == [] and loaded["remote"] == []
    assert loaded["images"] >= 1 + 2 + 2 * 2  # rounds plot, AP and confusion plots, gallery pairs
    assert (tmp_path / "report.png").stat().st_size > 10_000
