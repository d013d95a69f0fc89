"""Where Hugging Face weights come from, and that a miss fails in seconds with one line."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from autolabel.errors import AutolabelError
from autolabel.ontology import Ontology
from autolabel.proposers import build_proposer, hf_weights
from autolabel.proposers.base import ProposerSettings

MODEL_ID = "IDEA-Research/grounding-dino-tiny"


class RecordingLoader:
    """Stands in for transformers' from_pretrained: records calls; a hub id misses the cache when told to."""

    def __init__(self, *, cached: bool):
        self.cached = cached
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, source: str, local_files_only: bool) -> str:
        self.calls.append((source, local_files_only))
        if local_files_only and not self.cached and not Path(source).is_dir():
            raise OSError("couldn't find them in the cached files")
        return f"loaded:{source}"


@pytest.fixture
def online(monkeypatch):
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_model_path_is_loaded_without_network(tmp_path):
    loader = RecordingLoader(cached=False)
    folder = tmp_path / "my-weights"
    folder.mkdir()
    loaded, name = hf_weights.load_pretrained(loader, model_id=MODEL_ID, model_path=folder)
    assert (loaded, name) == (f"loaded:{folder}", "my-weights")
    assert loader.calls == [(str(folder), True)]


def test_missing_model_path_is_one_line(tmp_path):
    with pytest.raises(AutolabelError) as err:
        hf_weights.load_pretrained(
            RecordingLoader(cached=True), model_id=MODEL_ID, model_path=tmp_path / "nope"
        )
    assert "nope" in str(err.value) and "does not exist" in str(err.value)
    assert "\n" not in str(err.value)


def test_unloadable_model_path_is_one_line(tmp_path):
    def loader(source, local_files_only):
        raise ValueError("Unrecognized processing class in x.\nMake sure the folder has a processor")

    with pytest.raises(AutolabelError) as err:
        hf_weights.load_pretrained(loader, model_id=MODEL_ID, model_path=tmp_path)
    assert str(err.value).startswith("could not load weights from --model-path")
    assert "\n" not in str(err.value)


def test_cache_hit_needs_no_probe(online):
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    loader = RecordingLoader(cached=True)
    assert hf_weights.load_pretrained(loader, model_id=MODEL_ID) == (
        f"loaded:{MODEL_ID}",
        "grounding-dino-tiny",
    )
    assert loader.calls == [(MODEL_ID, True)]


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_cache_miss_offline_fails_without_download(online, variable):
    online.setenv(variable, "1")
    loader = RecordingLoader(cached=False)
    with pytest.raises(AutolabelError) as err:
        hf_weights.load_pretrained(loader, model_id=MODEL_ID)
    assert loader.calls == [(MODEL_ID, True)]
    assert "offline" in str(err.value)


@contextmanager
def silent_server():
    """Accepts TCP connections (kernel backlog) and never answers: a hub that hangs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


@contextmanager
def http_server():
    """Answers every request with 404, as a hub does for a model it lacks."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def closed_port():
    yield f"http://127.0.0.1:{free_port()}"


@contextmanager
def unresolvable_host():
    yield "https://no-such-host.invalid"


@pytest.mark.parametrize("hub", [closed_port, unresolvable_host, silent_server])
def test_cache_miss_with_unreachable_hub_fails_fast(online, hub):
    loader = RecordingLoader(cached=False)
    with hub() as endpoint:
        online.setenv("HF_ENDPOINT", endpoint)
        start = time.monotonic()
        with pytest.raises(AutolabelError) as err:
            hf_weights.load_pretrained(loader, model_id=MODEL_ID, probe_timeout_s=2.0)
        elapsed = time.monotonic() - start
    assert elapsed < 5
    assert loader.calls == [(MODEL_ID, True)]  # never tried to download
    assert "unreachable" in str(err.value) and endpoint in str(err.value)


def test_answering_hub_is_downloaded_from(online):
    loader = RecordingLoader(cached=False)
    with http_server() as endpoint:
        online.setenv("HF_ENDPOINT", endpoint)
        loaded, name = hf_weights.load_pretrained(loader, model_id=MODEL_ID)
    assert (loaded, name) == (f"loaded:{MODEL_ID}", "grounding-dino-tiny")
    assert loader.calls == [(MODEL_ID, True), (MODEL_ID, False)]


def test_failed_download_is_one_line(online):
    def loader(source, local_files_only):
        raise OSError("401 Client Error.\nRepository Not Found for url")

    with http_server() as endpoint:
        online.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(AutolabelError) as err:
            hf_weights.load_pretrained(loader, model_id=MODEL_ID)
    assert str(err.value) == f"could not download '{MODEL_ID}': 401 Client Error."


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        (None, f"https://huggingface.co/api/models/{MODEL_ID}"),
        ("https://hf-mirror.example.com/", f"https://hf-mirror.example.com/api/models/{MODEL_ID}"),
        ("http://10.0.0.5:8080", f"http://10.0.0.5:8080/api/models/{MODEL_ID}"),
    ],
)
def test_hub_url(online, endpoint, expected):
    if endpoint is None:
        online.delenv("HF_ENDPOINT", raising=False)
    else:
        online.setenv("HF_ENDPOINT", endpoint)
    assert hf_weights.hub_url(MODEL_ID) == expected


@pytest.mark.parametrize("model", ["grounding-dino", "owlv2"])
@pytest.mark.parametrize("offline", [True, False])
def test_real_proposer_without_weights_errors_within_seconds(online, tmp_path, model, offline):
    """The real transformers loaders, an empty HF cache: one line naming the model id, in < 5 s."""
    import torch  # noqa: F401  (import time, tens of seconds on a busy CPU, is not what is measured)
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor  # noqa: F401

    online.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    online.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-home" / "hub"))
    online.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    if offline:
        online.setenv("HF_HUB_OFFLINE", "1")
    ontology = Ontology.from_prompts(["bolt"])
    start = time.monotonic()
    with pytest.raises(AutolabelError) as err:
        build_proposer(ProposerSettings(model=model, device="cpu"), ontology)
    assert time.monotonic() - start < 5
    message = str(err.value)
    model_id = {"grounding-dino": MODEL_ID, "owlv2": "google/owlv2-base-patch16-ensemble"}[model]
    assert f"'{model_id}'" in message and "--model-path" in message and f"hf download {model_id}" in message
    assert "\n" not in message
