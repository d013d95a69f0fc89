"""The Ray engine on a local 2-CPU Ray: the same rows as the local engine, with tiny real models."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest

from autolabel import detections as dets
from autolabel.config import EngineConfig
from autolabel.engines.base import LocalEngine
from autolabel.ontology import Ontology
from autolabel.proposers import build_proposer
from autolabel.proposers.base import BatchMapper, ProposerSettings
from tests.builders import rgb

pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install '.[ray]')")

from autolabel.engines.ray import RayEngine, from_arrow, parse_workers, pool_size, to_arrow

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _one_local_cluster():
    """The tests here share the local Ray the first one starts; it stops after the last."""
    yield
    import ray

    ray.shutdown()


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
        runtime="torch",
    )
    ontology = Ontology.load(REPO / "prompts" / "fasteners.yaml")
    return partial(BatchMapper, partial(build_proposer, settings, ontology))


def test_ray_proposes_exactly_what_the_local_engine_proposes(tiny_grounding_dino_dir, tmp_path):
    rows = _rows(tmp_path)
    factory = _grounding_dino_factory(tiny_grounding_dino_dir)
    local = _by_id(LocalEngine().map(factory, [rows], batch_size=3))
    advanced: list[int] = []
    engine = RayEngine(EngineConfig(kind="ray", workers="2:2"), tmp_path / "ws")
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
        "unreadable": False,
    }
    assert back[2]["scores"] == {"entropy_sum": 0.5}
    np.testing.assert_array_equal(back[2]["embedding"], np.arange(4, dtype=np.float32))


@pytest.mark.parametrize(
    ("text", "expected"), [("4", (4, 4)), ("1:8", (1, 8)), ("2:", (2, None)), (":3", (1, 3))]
)
def test_workers_min_max(text, expected):
    assert parse_workers(text) == expected


@pytest.mark.parametrize(
    ("workers", "cpus", "per_worker", "expected"),
    [
        ("1:", 2, 1.0, (1, 2)),
        ("1:", 16, 4.0, (1, 4)),
        ("2:8", 2, 1.0, (2, 8)),
        ("3", 2, 1.0, (3, 3)),
        ("4:", 2, 1.0, (2, 2)),
    ],
)
def test_pool_size_fits_the_cluster_unless_told(workers, cpus, per_worker, expected):
    assert pool_size(EngineConfig(kind="ray", workers=workers, cpus_per_worker=per_worker), cpus) == expected


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
    engine = RayEngine(EngineConfig(kind="ray", workers="2:2"), tmp_path / "ws")
    results = _by_id(engine.map(factory, [rows], batch_size=2))
    killer.join(timeout=5)
    assert killed, "no actor was killed"
    assert sorted(results) == [r["id"] for r in rows]
    errors = {i: r["error"] for i, r in results.items() if r["error"]}
    assert list(errors) == [len(rows)], errors  # only the broken file, nothing from the kill
    pids = {int(p.name.split("-")[0]) for p in seen.iterdir()}
    assert len(pids - set(killed)) >= 1  # a restarted (or the other) actor finished the job


def test_pool_scoring_on_ray_gives_the_local_scores_and_embeddings(tmp_path):
    from autolabel.sampling.scorer import PoolScorer
    from tests.test_pool_scorer import SETTINGS, build_tiny_yolo

    weights = build_tiny_yolo(tmp_path / "yolo")
    rows = _rows(tmp_path, n=6)
    factory = partial(PoolScorer, weights, SETTINGS)
    local = _by_id(LocalEngine().map(factory, [rows], batch_size=4))
    remote = _by_id(
        RayEngine(EngineConfig(kind="ray", workers="2:2"), tmp_path / "ws").map(factory, [rows], batch_size=2)
    )
    assert sorted(remote) == sorted(local)
    scored = 0
    for image_id, expected in local.items():
        got = remote[image_id]
        assert (got["error"] is None) == (expected["error"] is None)
        if expected["error"] is not None:
            continue
        assert got["scores"].keys() == expected["scores"].keys()
        for key, value in expected["scores"].items():
            np.testing.assert_allclose(got["scores"][key], value, atol=1e-5, err_msg=key)
        np.testing.assert_allclose(got["embedding"], expected["embedding"], atol=1e-5)
        scored += 1
    assert scored == 6


def _cli_workspace(root: Path, model_dir: Path):
    from typer.testing import CliRunner

    from autolabel.cli.app import app

    for i in range(6):
        rgb(root / "raw" / "s" / f"{i}.jpg", width=80 + 8 * i, height=64, seed=i)
    (root / "raw" / "s" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    runner = CliRunner()
    result = runner.invoke(app, ["init", "--images", str(root / "raw"), "-w", str(root)])
    assert result.exit_code == 0, result.output
    args = [
        "propose", "-w", str(root), "--prompts", str(REPO / "prompts" / "fasteners.yaml"),
        "--model", "grounding-dino", "--model-path", str(model_dir), "--box-threshold", "0.0",
        "--text-threshold", "0.0", "--max-det", "7", "--batch-size", "3", "--preview", "0", "--runtime", "torch",
    ]  # fmt: skip
    return runner, app, args


def _stored(root: Path) -> dict[str, tuple]:
    import sqlite3

    conn = sqlite3.connect(root / ".autolabel" / "state.db")
    out = {}
    for path, status, det in conn.execute(
        "SELECT i.path, i.status, p.detections FROM images i LEFT JOIN predictions p ON p.image_id = i.id"
    ):
        out[path] = (status, None if det is None else dets.from_json(det))
    conn.close()
    return out


def test_propose_engine_ray_from_the_cli_stores_what_local_stores(tiny_grounding_dino_dir, tmp_path):
    runner, app, args = _cli_workspace(tmp_path / "local", tiny_grounding_dino_dir)
    result = runner.invoke(app, [*args, "--engine", "local"])
    assert result.exit_code == 0, result.output
    runner, app, args = _cli_workspace(tmp_path / "ray", tiny_grounding_dino_dir)
    result = runner.invoke(app, [*args, "--engine", "ray", "--workers", "2:2"])
    assert result.exit_code == 0, result.output
    assert "proposed 6 images" in result.output  # the broken file was refused when it was registered

    local, remote = _stored(tmp_path / "local"), _stored(tmp_path / "ray")
    assert local.keys() == remote.keys()
    assert remote["s/broken.jpg"] == ("error", None)
    for path, (status, det) in local.items():
        assert remote[path][0] == status, path
        if det is None:
            assert remote[path][1] is None
            continue
        np.testing.assert_allclose(remote[path][1].xyxy, det.xyxy, atol=1e-5)
        np.testing.assert_allclose(remote[path][1].confidence, det.confidence, atol=1e-5)
        np.testing.assert_array_equal(remote[path][1].class_id, det.class_id)

    again = runner.invoke(app, [*args, "--engine", "ray"])  # resume by id: nothing is left to do
    assert again.exit_code == 0, again.output
    assert "proposed 0 images" in again.output and "6 already done" in again.output
    assert _stored(tmp_path / "ray").keys() == remote.keys()


def test_engine_ray_without_the_extra_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from autolabel.cli.app import app

    rgb(tmp_path / "raw" / "a.jpg")
    runner = CliRunner()
    assert runner.invoke(app, ["init", "--images", str(tmp_path / "raw"), "-w", str(tmp_path)]).exit_code == 0
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name.startswith("ray") else real(name, *a)
    )
    result = runner.invoke(app, ["propose", "-w", str(tmp_path), "--prompt", "bolt", "--engine", "ray"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        (
            "error: the optional package 'ray[data]' is not installed: --engine ray needs Ray Data: "
            "pip install 'autolabel-loop[ray]' (or pip install 'ray[data]')"
        )
    ]


def test_propose_on_ray_in_its_own_process_is_quiet_and_leaves_home_alone(tiny_grounding_dino_dir, tmp_path):
    """The CLI as a user runs it: no Ray log line reaches the terminal, nothing lands in $HOME."""
    import os
    import subprocess
    import sys

    _, _, args = _cli_workspace(tmp_path / "ws", tiny_grounding_dino_dir)
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "XDG_", "HF_HOME", "YOLO_CONFIG"))
    }
    env.update(HOME=str(home), HF_HUB_OFFLINE="1", YOLO_OFFLINE="1")
    cli = [sys.executable, "-c", "from autolabel.cli.app import main; main()"]
    done = subprocess.run(
        [*cli, *args, "--engine", "ray", "--workers", "2:2"], env=env, capture_output=True, text=True,
        timeout=600, check=False, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "proposed 6 images" in done.stdout
    printed = (done.stdout + done.stderr).splitlines()
    noisy = [
        line
        for line in printed
        if any(m in line for m in ("INFO", "WARNING", "core_worker", "(raylet)", "ray::"))
    ]
    assert noisy == []
    assert sorted(p.name for p in home.iterdir()) == []  # no ~/.ray, ~/.cache, ~/.config


# last in the file: 'ray stop' ends every Ray process on the machine
TWO_NODE_DRIVER = """
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, sys.argv[1])
import ray.cloudpickle

import tests.test_engine_ray as t
from autolabel.config import EngineConfig
from autolabel.engines.ray import RayEngine

ray.cloudpickle.register_pickle_by_value(t)
tmp, address, model_dir = Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
rows = t._rows(tmp, n=12)
factory = partial(t._Recording, t._grounding_dino_factory(model_dir), str(tmp / "workers"), 0.3)
engine = RayEngine(EngineConfig(kind="ray", ray_address=address, workers="2:2"), tmp / "ws")
results = t._by_id(engine.map(factory, [rows], batch_size=1))
engine.close()
assert sorted(results) == [r["id"] for r in rows], sorted(results)
print("ok", len(results))
"""


@pytest.mark.slow
def test_two_nodes_both_receive_work(tiny_grounding_dino_dir, tmp_path):
    """A head and a second worker node on this machine, joined with ``ray start --address``; the
    driver runs in its own process, as ``autolabel propose --ray-address`` would."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    import ray

    ray.shutdown()  # 'ray stop' below ends every Ray of this machine, the module's local one too
    ray_bin = Path(sys.executable).parent / "ray"
    temp = Path(tempfile.mkdtemp(prefix="al-ray-"))  # short: unix socket paths stop at 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    port = "46379"

    def run(*args, timeout=300):
        return subprocess.run(
            [str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    head = run(
        ray_bin,
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=1",
        "--include-dashboard=false",
        f"--temp-dir={temp}",
    )
    assert head.returncode == 0, head.stdout + head.stderr
    try:
        address = f"{_node_ip(head.stdout)}:{port}"
        worker = run(ray_bin, "start", f"--address={address}", "--num-cpus=1")
        assert worker.returncode == 0, worker.stdout + worker.stderr
        (tmp_path / "workers").mkdir()
        driver = run(sys.executable, "-c", TWO_NODE_DRIVER, REPO, tmp_path, address, tiny_grounding_dino_dir)
        assert driver.returncode == 0 and "ok 13" in driver.stdout, driver.stdout + driver.stderr[-3000:]
        nodes = {p.name.split("-", 1)[1] for p in (tmp_path / "workers").iterdir()}
        assert len(nodes) == 2, nodes
    finally:
        run(ray_bin, "stop", "--force")
        shutil.rmtree(temp, ignore_errors=True)


def _node_ip(start_output: str) -> str:
    import re

    match = re.search(r"ray start --address='([\d.]+):\d+'", start_output)
    assert match, start_output
    return match.group(1)
