"""The CI subset of the standing fault suite (``scripts/bench_faults.py --quick``), against the
session's real Label Studio: malformed annotations, two workspaces on one title, HTTP 500/401/
timeouts in every call, and bad image files. Nothing lost, nothing on the wrong image, no
duplicate task, no traceback, an intact database."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.studio
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_faults.py"


@pytest.fixture(scope="module")
def faults():
    spec = importlib.util.spec_from_file_location("bench_faults", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("scenario", ["malformed", "two-workspaces", "http", "bad-images"])
def test_fault_scenario_loses_nothing(faults, studio_server, scenario):
    work = studio_server.images_base / f"faults-{scenario}"
    work.mkdir()
    run = {
        "malformed": faults.scenario_malformed,
        "two-workspaces": faults.scenario_two_workspaces,
        "http": faults.scenario_http,
        "bad-images": faults.scenario_bad_images,
    }[scenario]
    row = run(studio_server.url, studio_server.token, work)
    assert row.faults > 0, row
    assert (row.lost, row.wrong, row.duplicates, row.tracebacks, row.integrity) == (0, 0, 0, 0, "ok"), row
