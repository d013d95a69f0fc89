"""Finding Hugging Face weights without ever hanging: ``--model-path``, the HF cache, then the hub.

Order of sources:

1. ``--model-path DIR`` (a ``save_pretrained`` folder): must exist; loaded with no network access.
2. The HF cache (``HF_HOME``), read with ``local_files_only=True``.
3. The hub, only when the user is not offline (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``) and a
   ~3 s HTTP probe of the hub (``HF_ENDPOINT`` or https://huggingface.co) gets an answer. A hub miss
   otherwise costs 23-139 s of retries before failing.

Every failure is one ``AutolabelError`` line naming the model id and how to supply weights.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from autolabel.errors import AutolabelError, first_line

T = TypeVar("T")

# source (hub id or local dir), local_files_only -> whatever the backend loads (processor, model)
Loader = Callable[[str, bool], T]

_TRUE = {"1", "true", "yes", "on"}
DEFAULT_PROBE_TIMEOUT_S = 3.0


def load_pretrained(
    loader: Loader[T],
    *,
    model_id: str,
    model_path: str | os.PathLike | None = None,
    probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
) -> tuple[T, str]:
    """Load through ``loader`` from the first available source; returns (loaded, weights name).

    The weights name is the local folder's name or the last part of the hub id, for model versions.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.exists():
            raise AutolabelError(f"--model-path {path} does not exist (expected a save_pretrained folder)")
        return _load(loader, str(path), True, f"could not load weights from --model-path {path}"), path.name

    weights_name = model_id.rstrip("/").split("/")[-1]
    try:
        return loader(model_id, True), weights_name
    except OSError:
        pass  # not in the cache; transformers says so with an OSError

    if offline_mode():
        raise missing_weights_error(model_id, "offline mode is on (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE)")
    url = hub_url(model_id)
    if not reachable(url, probe_timeout_s):
        raise missing_weights_error(model_id, f"the hub is unreachable ({url.split('/api/')[0]})")
    return _load(loader, model_id, False, f"could not download '{model_id}'"), weights_name


def missing_weights_error(model_id: str, reason: str) -> AutolabelError:
    return AutolabelError(
        f"no weights for '{model_id}' in the Hugging Face cache and {reason}: "
        f"pass --model-path DIR (a save_pretrained folder), or run `hf download {model_id}` on a machine "
        "with internet to fill the HF cache (HF_HOME), then rerun (HF_HUB_OFFLINE=1 works from then on)"
    )


def offline_mode() -> bool:
    return any(
        os.environ.get(key, "").strip().lower() in _TRUE for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_url(model_id: str) -> str:
    """The hub API address a download would start with (``HF_ENDPOINT`` honoured)."""
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    return f"{endpoint}/api/models/{model_id}"


def reachable(url: str, timeout_s: float) -> bool:
    """Whether ``url`` answers HTTP at all (any status) within ``timeout_s``, DNS and TLS included.

    A plain TCP connect is not enough: sandboxes and captive proxies accept every connection. The
    request runs in a thread because name resolution has no timeout of its own; proxies come from
    the environment as they do for the real download.
    """
    import httpx

    result: list[bool] = []

    def probe() -> None:
        try:
            httpx.head(url, timeout=timeout_s, follow_redirects=False)
            result.append(True)
        except (httpx.HTTPError, OSError, ValueError):
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True, name="autolabel-hub-probe")
    thread.start()
    thread.join(timeout_s + 0.5)
    return bool(result and result[0])


def _load(loader: Loader[T], source: str, local_files_only: bool, what: str) -> T:
    try:
        return loader(source, local_files_only)
    except (OSError, ValueError, KeyError) as exc:
        raise AutolabelError(f"{what}: {first_line(exc)}") from None


class ZeroShotDetector:
    """A transformers zero-shot detector loaded once: processor, model, device, dtype, version."""

    def __init__(self, settings, *, name: str, model_id: str, model_type: str):
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        from autolabel.runtime import resolve_device, route_library_logging

        route_library_logging()
        self.device = resolve_device(settings.device)
        self.dtype = torch.float16 if (self.device.startswith("cuda") and settings.fp16) else torch.float32

        def load(source: str, local_files_only: bool):
            processor = AutoProcessor.from_pretrained(source, local_files_only=local_files_only)
            model = AutoModelForZeroShotObjectDetection.from_pretrained(
                source, local_files_only=local_files_only, dtype=self.dtype
            )
            return processor, model

        (processor, model), weights_name = load_pretrained(
            load, model_id=model_id, model_path=settings.model_path
        )
        if getattr(model.config, "model_type", None) != model_type:
            raise AutolabelError(
                f"--model {name}: the weights are a '{model.config.model_type}' model, not {model_type}"
            )
        self.processor = processor
        self.model = model.to(self.device).eval()
        self.model_version = f"{name}:{weights_name}"
