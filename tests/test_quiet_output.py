"""Library noise stays out of the terminal: warnings go to the workspace log, ``--verbose`` shows them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.builders import rgb

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "autolabel.cli.app", *args],
        env=env, capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
    )  # fmt: skip


def test_propose_prints_no_warning_and_logs_it(tmp_path, tiny_grounding_dino_dir):
    for i in range(3):
        rgb(tmp_path / "raw" / f"{i}.jpg", width=96, height=64, seed=i)
    init = _cli("init", "--images", str(tmp_path / "raw"), "-w", str(tmp_path))
    assert init.returncode == 0, init.stderr
    assert "/?" not in init.stdout + init.stderr  # the registration bar knows its total
    propose = [
        "propose", "-w", str(tmp_path), "--prompts", "prompts/fasteners.yaml", "--model", "grounding-dino",
        "--model-path", str(tiny_grounding_dino_dir), "--box-threshold", "0.0", "--text-threshold", "0.0",
        "--runtime", "torch",
    ]  # fmt: skip
    quiet = _cli(*propose)
    assert quiet.returncode == 0, quiet.stderr
    printed = quiet.stdout + quiet.stderr
    assert "proposed 3 images" in printed
    assert [line for line in printed.splitlines() if "Warning" in line] == []
    assert "Traceback" not in printed and "/?" not in printed
    log = (tmp_path / ".autolabel" / "logs" / "autolabel.log").read_text()
    assert "UserWarning" in log  # transformers' non-writable NumPy array warning, kept for whoever looks

    verbose = _cli("--verbose", *propose, "--force")
    assert verbose.returncode == 0, verbose.stderr
    assert "UserWarning" in verbose.stderr
