"""The Ray engine on a local 2-CPU Ray: the same rows as the local engine, with tiny real models."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from autolabel import detections as dets
from autolabel.engines.base import LocalEngine
from autolabel.ontology import Ontology
from autolabel.proposers import build_proposer
from autolabel.proposers.base import BatchMapper, ProposerSettings
from tests.builders import rgb

pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install '.[ray]')")

from autolabel.engines.ray import RayEngine, RaySettings, from_arrow, parse_workers, to_arrow

REPO = Path(__file__).resolve().parents[1]


def _rows(tmp_path: Path, n: int = 7) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "id": i + 1,
                "path": str(rgb(tmp_path / "img" / f"{i}.jpg", width=80 + 8 * i, height=64, seed=i)),
            }
        )
    bad = tmp_path / "img" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows.append({"id": n + 1, "path": str(bad)})
    return rows


def _by_id(results) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for row in results:
        assert row["id"] not in out, f"id {row['id']} came back twice"
        out[row["id"]] = row
    return out


def _grounding_dino_factory(model_dir: Path):
    settings = ProposerSettings(
        model="grounding-dino",
        model_path=str(model_dir),
        box_threshold=0.0,
        text_threshold=0.0,
        max_det=7,
        batch_size=3,
        device="cpu",
    )
    ontology = Ontology.load(REPO / "prompts" / "fasteners.yaml")
    return partial(BatchMapper, partial(build_proposer, settings, ontology))


def test_ray_proposes_exactly_what_the_local_engine_proposes(tiny_grounding_dino_dir, tmp_path):
    rows = _rows(tmp_path)
    factory = _grounding_dino_factory(tiny_grounding_dino_dir)
    local = _by_id(LocalEngine().map(factory, [rows], batch_size=3))
    advanced: list[int] = []
    engine = RayEngine(RaySettings(min_workers=2, max_workers=2), tmp_path / "ws")
    remote = _by_id(engine.map(factory, [rows[:4], rows[4:]], batch_size=3, advance=advanced.append))

    assert sorted(remote) == sorted(local) == [r["id"] for r in rows]
    assert sum(advanced) == len(rows)
    assert remote[len(rows)]["error"] and remote[len(rows)]["detections"] is None  # the bad file
    assert local[len(rows)]["error"] == remote[len(rows)]["error"]
    boxes = 0
    for image_id, expected in local.items():
        if expected["error"] is not None:
            continue
        got = remote[image_id]
        assert got["error"] is None
        a, b = dets.from_dict(expected["detections"]), dets.from_dict(got["detections"])
        assert len(a) == len(b)
        np.testing.assert_allclose(b.xyxy, a.xyxy, atol=1e-5)
        np.testing.assert_allclose(b.confidence, a.confidence, atol=1e-5)
        np.testing.assert_array_equal(b.class_id, a.class_id)
        boxes += len(a)
    assert boxes > 0  # the comparison compared boxes, not empty lists


def test_results_travel_in_one_fixed_schema_empty_detections_included():
    empty = dets.to_dict(dets.empty())
    rows = [
        {"id": 1, "detections": empty, "error": None},
        {"id": 2, "detections": None, "error": "not an image"},
        {"id": 3, "scores": {"entropy_sum": 0.5}, "embedding": np.arange(4, dtype=np.float32), "error": None},
    ]
    table = to_arrow(rows)
    assert table.schema == to_arrow(rows[:1]).schema  # the same schema whatever the rows hold
    back = list(from_arrow(table))
    assert back[0]["detections"] == empty and back[0]["error"] is None
    assert back[1] == {
        "id": 2,
        "detections": None,
        "scores": None,
        "embedding": None,
        "error": "not an image",
    }
    assert back[2]["scores"] == {"entropy_sum": 0.5}
    np.testing.assert_array_equal(back[2]["embedding"], np.arange(4, dtype=np.float32))


@pytest.mark.parametrize(
    ("text", "expected"), [("4", (4, 4)), ("1:8", (1, 8)), ("2:", (2, None)), (":3", (1, 3))]
)
def test_workers_min_max(text, expected):
    assert parse_workers(text) == expected


@pytest.mark.parametrize("text", ["x", "0", "3:2", "1:y"])
def test_bad_workers_is_one_line(text):
    from autolabel.errors import AutolabelError

    with pytest.raises(AutolabelError, match="--workers"):
        parse_workers(text)


class _Recording:
    """A mapper that wraps the real one and records, per batch, the process and node it ran on.

    Pickled by value: Ray's workers cannot import pytest's test modules by name."""

    @staticmethod
    def by_value():
        import sys

        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    def __init__(self, factory, folder: str, delay: float):
        import os

        import ray

        self.inner = factory()
        self.folder = Path(folder)
        self.delay = delay
        self.tag = f"{os.getpid()}-{ray.get_runtime_context().get_node_id()}"

    def map_rows(self, rows):
        import time

        (self.folder / self.tag).touch()
        time.sleep(self.delay)
        return self.inner.map_rows(rows)


@pytest.mark.slow
def test_a_killed_actor_is_restarted_and_every_id_arrives_once(tiny_grounding_dino_dir, tmp_path):
    import os
    import signal
    import threading
    import time

    rows = _rows(tmp_path, n=24)
    seen = tmp_path / "workers"
    seen.mkdir()
    _Recording.by_value()
    factory = partial(_Recording, _grounding_dino_factory(tiny_grounding_dino_dir), str(seen), 0.5)
    killed: list[int] = []

    def kill_one():
        while not list(seen.iterdir()):
            time.sleep(0.05)
        pid = int(next(seen.iterdir()).name.split("-")[0])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    engine = RayEngine(RaySettings(min_workers=2, max_workers=2), tmp_path / "ws")
    results = _by_id(engine.map(factory, [rows], batch_size=2))
    killer.join(timeout=5)
    assert killed, "no actor was killed"
    assert sorted(results) == [r["id"] for r in rows]
    errors = {i: r["error"] for i, r in results.items() if r["error"]}
    assert list(errors) == [len(rows)], errors  # only the broken file, nothing from the kill
    pids = {int(p.name.split("-")[0]) for p in seen.iterdir()}
    assert len(pids - set(killed)) >= 1  # a restarted (or the other) actor finished the job


@pytest.mark.slow
def test_two_nodes_both_receive_work(tiny_grounding_dino_dir, tmp_path):
    """A head and a second worker node on this machine, joined with ``ray start --address``."""
    import os
    import subprocess
    import sys

    ray_bin = Path(sys.executable).parent / "ray"
    import tempfile

    temp = Path(tempfile.mkdtemp(prefix="al-ray-"))  # short: unix socket paths stop at 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    port = "46379"

    def ray_cmd(*args):
        return subprocess.run(
            [str(ray_bin), *args], env=env, capture_output=True, text=True, timeout=180, check=False
        )

    head = ray_cmd(
        "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={temp}"
    )
    assert head.returncode == 0, head.stdout + head.stderr
    try:
        address = f"{_node_ip(head.stdout)}:{port}"
        worker = ray_cmd("start", f"--address={address}", "--num-cpus=1")
        assert worker.returncode == 0, worker.stdout + worker.stderr
        rows = _rows(tmp_path, n=12)
        seen = tmp_path / "workers"
        seen.mkdir()
        _Recording.by_value()
        factory = partial(_Recording, _grounding_dino_factory(tiny_grounding_dino_dir), str(seen), 0.3)
        os.environ["RAY_AUTH_MODE"] = "disabled"
        engine = RayEngine(RaySettings(address=address, min_workers=2, max_workers=2), tmp_path / "ws")
        results = _by_id(engine.map(factory, [rows], batch_size=1))
        assert sorted(results) == [r["id"] for r in rows]
        nodes = {p.name.split("-", 1)[1] for p in seen.iterdir()}
        assert len(nodes) == 2, nodes
    finally:
        os.environ.pop("RAY_AUTH_MODE", None)
        ray_cmd("stop", "--force")
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


def _node_ip(start_output: str) -> str:
    import re

    match = re.search(r"ray start --address='([\d.]+):\d+'", start_output)
    assert match, start_output
    return match.group(1)
