"""Process-wide hygiene, applied once by the CLI (never at import time).

Every library's config and cache directory points into the workspace (or a temp dir), nothing
writes into $HOME, and nothing is downloaded or pip-installed implicitly: ultralytics runs
offline with auto-install off and a local font; Hugging Face weights come from the user's cache,
``--model-path``, or the hub when the user is online (see ``autolabel.proposers.hf_weights``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

# What the user asked for, recorded before autolabel defaults YOLO_OFFLINE to 1 for its own hygiene
# (child processes inherit it, so a subprocess sees the user's choice too).
USER_OFFLINE_ENV = "AUTOLABEL_USER_YOLO_OFFLINE"


def _remember_user_offline() -> None:
    os.environ.setdefault(USER_OFFLINE_ENV, os.environ.get("YOLO_OFFLINE", ""))


def offline_requested() -> bool:
    """Whether the user set YOLO_OFFLINE (not autolabel's default): no official weights are fetched."""
    value = os.environ.get(USER_OFFLINE_ENV, os.environ.get("YOLO_OFFLINE", ""))
    return value.strip().lower() in ("1", "true", "yes", "on", "y", "t")


def configure_environment(cache_root: Path) -> None:
    cache_root = Path(cache_root)
    env = os.environ
    _remember_user_offline()
    # onnxruntime writes a device-id file under $XDG_CACHE_HOME (default ~/.cache) when it is
    # imported; point that at the workspace, but keep the user's model caches where they are.
    user_cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    env.setdefault("HF_HOME", str(user_cache / "huggingface"))
    env.setdefault("TORCH_HOME", str(user_cache / "torch"))
    env.setdefault("XDG_CACHE_HOME", str(cache_root / "xdg-cache"))
    env.setdefault("YOLO_CONFIG_DIR", str(cache_root / "ultralytics"))
    env.setdefault("YOLO_OFFLINE", "1")
    env.setdefault("YOLO_AUTOINSTALL", "false")
    env.setdefault("YOLO_VERBOSE", "false")
    env.setdefault("MPLCONFIGDIR", str(cache_root / "matplotlib"))
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("LABEL_STUDIO_COLLECT_ANALYTICS", "false")
    env.setdefault("LABEL_STUDIO_LATEST_VERSION_CHECK", "false")
    for key in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)


# Libraries that give their loggers their own terminal handler (and stop propagation): routed to
# the log file like everyone else's once the CLI configured logging.
LIBRARY_LOGGERS = ("transformers", "ultralytics")


HANDLER_NAME = "autolabel"  # marks the handlers configure_logging installs (a second call replaces them)


def configure_logging(log_path: Path, verbose: bool = False) -> Path:
    """Python warnings and third-party logging go to ``log_path``; with ``verbose`` to stderr too.

    Called once per command by the CLI (tests run several commands in one process, so a second call
    replaces the handlers of the first). Library users who never call it keep Python's defaults.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = [logging.FileHandler(log_path, encoding="utf-8")]
    handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[1].setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for handler in handlers:
        handler.set_name(HANDLER_NAME)
        root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    route_library_logging()
    return log_path


def logging_configured() -> bool:
    return current_log_path() is not None


def current_log_path() -> Path | None:
    """The log file ``configure_logging`` set up in this process, if it did."""
    for handler in logging.getLogger().handlers:
        if handler.get_name() == HANDLER_NAME and isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


def route_library_logging() -> None:
    """Once the CLI configured logging: the already imported libraries' loggers propagate to it.

    transformers and ultralytics attach a terminal handler to their logger when first imported;
    call this right after importing one (``configure_ultralytics`` and the Hugging Face proposers do).
    """
    if not logging_configured():
        return
    for name in LIBRARY_LOGGERS:
        if name not in sys.modules:
            continue
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]:
            if not isinstance(handler, logging.FileHandler):
                logger.removeHandler(handler)
        logger.propagate = True


def configure_ultralytics() -> None:
    """Call right before using ultralytics: local font, no settings sync, no hub calls.

    Ultralytics looks for Arial.ttf in its ``USER_CONFIG_DIR`` (``$YOLO_CONFIG_DIR/Ultralytics``);
    without it there, ``check_font`` sends a request to github.com before every training, even with
    YOLO_OFFLINE=1. Setting names vary across versions ('hub' is gone in 8.4); unknown keys raise.
    """
    _remember_user_offline()
    os.environ.setdefault("YOLO_OFFLINE", "1")  # read when ultralytics is first imported
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    ensure_font(Path(USER_CONFIG_DIR))
    wanted = {k: v for k, v in {"sync": False, "hub": False}.items() if k in SETTINGS.defaults}
    if any(SETTINGS.get(k) != v for k, v in wanted.items()):
        SETTINGS.update(wanted)
    disable_openvino_telemetry()
    route_library_logging()


def disable_openvino_telemetry() -> None:
    """Keep OpenVINO's converter from sending usage data and writing ``~/intel``.

    ``openvino.tools.ovc`` (which ultralytics' OpenVINO export imports) reports to Google Analytics
    and creates a consent folder in ``$HOME`` unless a consent file there says no. It falls back to
    its own no-op stub when ``openvino_telemetry`` cannot be imported, so the package is masked for
    this process; nothing else uses it.
    """
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import -> ImportError


def import_openvino():
    """``openvino``, imported with its telemetry masked (see ``disable_openvino_telemetry``)."""
    disable_openvino_telemetry()
    import openvino

    return openvino


def ensure_font(config_dir: Path) -> None:
    """Ultralytics downloads Arial.ttf for plots unless it finds one in its config dir.

    A DejaVu Sans shipped with matplotlib stands in under the names it looks for.
    """
    config_dir.mkdir(parents=True, exist_ok=True)
    targets = [config_dir / name for name in ("Arial.ttf", "Arial.Unicode.ttf")]
    if all(t.exists() for t in targets):
        return
    import matplotlib

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for target in targets:
        if not target.exists():
            shutil.copyfile(source, target)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' / 'mps' / 'cpu'; an explicit device that is missing is one clear error."""
    import torch

    from autolabel.errors import AutolabelError

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AutolabelError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise AutolabelError("--device mps: MPS is not available on this machine (use --device cpu)")
    return device


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine; a zombie (killed, not reaped) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
