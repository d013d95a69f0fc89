"""configure_environment: the libraries the CLI loads write nothing into $HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sys
from pathlib import Path
from autolabel.runtime import configure_environment, configure_ultralytics
configure_environment(Path(sys.argv[1]))
import onnxruntime  # writes a device-id file under $XDG_CACHE_HOME on import
import matplotlib.pyplot as plt  # font cache under MPLCONFIGDIR
plt.figure().savefig(Path(sys.argv[1]) / "probe.png")
configure_ultralytics()
import ultralytics  # settings.json under YOLO_CONFIG_DIR
try:
    import openvino.tools.ovc  # optional; its telemetry would create ~/intel
except ImportError:
    pass
print(os.environ.get("HF_HOME"))
"""


def test_libraries_write_nothing_into_home_and_model_caches_stay_the_users(tmp_path):
    home, cache = tmp_path / "home", tmp_path / "ws-cache"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "HF_", "TORCH_", "YOLO_", "MPL"))}
    env.update(HOME=str(home), YOLO_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cache)],
        env=env, capture_output=True, text=True, timeout=120, check=False, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert [p for p in home.rglob("*")] == []
    assert result.stdout.strip().splitlines()[-1] == str(home / ".cache" / "huggingface")
    assert (cache / "probe.png").is_file()
