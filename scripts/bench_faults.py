"""The standing fault suite (issue 12): inject faults into the Label Studio sync and the inputs,
and count what a careful user cares about. Every loss/wrong/duplicate/traceback figure must be 0.

Against a real local Label Studio (started here on 127.0.0.1, stopped at the end):

* ``malformed``: 24 malformed or unsupported annotation results (missing keys, wrong types, NaN,
  negative or zero sizes, out of range, polygons, keypoints, brushes, ellipses, duplicated region
  ids, empty labels, huge values) next to good annotations, pulled twice;
* ``two-workspaces``: two workspaces with one project title on one server;
* ``http``: HTTP 500s, 401s and timeouts (before the request, and after the server did the write)
  injected into every API call of push and pull, rerun until done, as a user would;
* ``kill-studio-push`` / ``kill-studio-pull``: ``kill -9`` of Label Studio at several points of a
  push and of a pull, restart, rerun;
* ``kill-autolabel``: ``kill -9`` of an ``autolabel push`` / ``autolabel pull`` process, rerun;
* ``kill-loop``: ``kill -9`` of ``autolabel loop`` inside each of its 7 steps (round 1), rerun;
* ``bad-images``: 14 bad image files and names through ``autolabel init`` and ``push``.

    python scripts/bench_faults.py                # all scenarios, table + JSON
    python scripts/bench_faults.py --quick        # the CI subset (malformed, two-workspaces, http, bad-images)

Human annotations are the replay annotator's (exact ground truth), so a stored label that differs
from its own image's truth is "attached to the wrong image" (or corrupted), one missing is "lost".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")


@dataclass
class Row:
    scenario: str
    faults: int = 0
    lost: int = 0
    wrong: int = 0
    duplicates: int = 0
    tracebacks: int = 0
    integrity: str = "ok"
    note: str = ""


# -- workspaces with known truth ------------------------------------------------------------------


def make_workspace(root: Path, n: int, url: str, title: str, seed: int):
    from autolabel import detections as dets
    from autolabel.config import WorkspaceConfig
    from autolabel.formats import yolo
    from autolabel.registry import register_images
    from autolabel.synthetic import CLASS_NAMES, generate_dataset
    from autolabel.workspace import Workspace

    generate_dataset(root / "scenes", n=n, seed=seed, imgsz=96, groups=max(1, n // 8))
    ws = Workspace.create(
        root / "ws",
        WorkspaceConfig(images=str(root / "scenes" / "images"), studio={"url": url, "project_title": title}),
    )
    truth = {}
    with ws.open_store() as store:
        register_images(store, ws.image_root, ws.config.grouping)
        store.ensure_classes(CLASS_NAMES)
        rows = []
        for image in store.images():
            lines = (root / "scenes" / "labels" / image.path).with_suffix(".txt").read_text().splitlines()
            det = yolo.from_lines(lines, image.width, image.height)
            truth[image.id] = det
            shown = dets.make(det.xyxy + 2.0, det.class_id, [0.8] * len(det)) if len(det) else dets.empty()
            rows.append((image.id, "proposer:v1", "proposer-v1", dets.to_json(shown), None))
        store.save_predictions(rows)
    return ws, truth, root / "scenes"


def push(ws, client, **kw):
    from autolabel.studio import push as studio_push
    from autolabel.studio import server

    with ws.open_store() as store:
        return studio_push.push(
            store,
            client,
            image_root=ws.image_root,
            document_root=server.document_root(ws.image_root),
            title=ws.config.studio.project_title,
            batch_size=kw.pop("batch_size", 20),
            **kw,
        )


def pull(ws, client):
    from autolabel.studio import pull as studio_pull

    with ws.open_store() as store:
        return studio_pull.pull(store, client, title=ws.config.studio.project_title)


def answer(ws, client, scenes: Path) -> int:
    from autolabel.studio import state as studio_state
    from autolabel.studio.replay import replay

    with ws.open_store() as store:
        project = studio_state.find_project(store, client.url, ws.config.studio.project_title)
        names = store.class_names()
    return replay(client, project.project_id, scenes, class_names=names).answered


def check(ws, client, truth: dict, annotated: set[int], row: Row) -> None:
    """lost / wrong / duplicates / integrity of one workspace against its truth."""
    import numpy as np

    from autolabel import detections as dets
    from autolabel.studio import state as studio_state

    db = sqlite3.connect(ws.db_path)
    row.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    with ws.open_store() as store:
        labels = store.labels()
        project = studio_state.find_project(store, client.url, ws.config.studio.project_title)
        by_image: dict[int, int] = {}
        for task in client.iter_tasks(project.project_id, fields="task_only"):
            data = task.get("data") or {}
            if data.get("autolabel_workspace") == store.workspace_id():
                by_image[data["autolabel_image_id"]] = by_image.get(data["autolabel_image_id"], 0) + 1
    row.duplicates += sum(c - 1 for c in by_image.values() if c > 1)
    for image_id in annotated:
        if image_id not in labels:
            row.lost += 1
    for image_id, text in labels.items():
        got, want = dets.from_json(text), truth[image_id]
        if image_id not in annotated or len(got) != len(want):
            row.wrong += 1
            continue
        if len(want) and not (
            np.abs(np.sort(got.xyxy, 0) - np.sort(want.xyxy, 0)).max() <= 1.0
            and sorted(got.class_id.tolist()) == sorted(want.class_id.tolist())
        ):
            row.wrong += 1


def guarded(row: Row, fn, *args, expected=(), **kwargs):
    """Run one user action; an AutolabelError is the one-line answer a user gets, anything else a traceback."""
    from autolabel.errors import AutolabelError

    try:
        return fn(*args, **kwargs)
    except (AutolabelError, *expected):
        return None
    except Exception:  # noqa: BLE001
        row.tracebacks += 1
        row.note += traceback.format_exc(limit=3).strip().splitlines()[-1][:120] + "; "
        return None


def annotated_images(ws) -> set[int]:
    """Images whose task carries a human annotation on the server (what must never be lost)."""
    with ws.open_store() as store:
        return {r[0] for r in store.conn.execute("SELECT image_id FROM studio_tasks WHERE state = 'pushed'")}


# -- scenarios ---------------------------------------------------------------------------------------


def malformed_results(w: int, h: int) -> list[list[dict]]:
    def rect(**value):
        base = {"x": 10, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["bolt"]}
        for k, v in value.items():
            if v is None and k.startswith("drop_"):
                base.pop(k[5:])
            else:
                base[k] = v
        return {
            "id": "m",
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": w,
            "original_height": h,
            "value": base,
        }

    good = rect()
    return [
        [rect(drop_x=None)],
        [rect(drop_y=None)],
        [rect(drop_width=None)],
        [rect(drop_height=None)],
        [rect(x="abc")],
        [rect(y=None)],
        [rect(width=float("nan"))],
        [rect(x=True)],
        [rect(width=-5)],
        [rect(height=0)],
        [rect(x=120)],
        [rect(x=1e12)],
        [rect(rotation="left")],
        [rect(rectanglelabels=[])],
        [rect(rectanglelabels="bolt")],
        [{**good, "original_width": 0}],
        [
            {
                "id": "p",
                "type": "polygonlabels",
                "from_name": "label",
                "to_name": "image",
                "original_width": w,
                "original_height": h,
                "value": {"points": [[1, 1], [9, 1], [9, 9]], "polygonlabels": ["bolt"]},
            }
        ],
        [
            {
                "id": "k",
                "type": "keypointlabels",
                "from_name": "label",
                "to_name": "image",
                "original_width": w,
                "original_height": h,
                "value": {"x": 5, "y": 5, "keypointlabels": ["bolt"]},
            }
        ],
        [
            {
                "id": "b",
                "type": "brushlabels",
                "from_name": "label",
                "to_name": "image",
                "value": {"rle": [1, 2, 3], "brushlabels": ["bolt"]},
            }
        ],
        [
            {
                "id": "e",
                "type": "ellipselabels",
                "from_name": "label",
                "to_name": "image",
                "original_width": w,
                "original_height": h,
                "value": {"x": 5, "y": 5, "radiusX": 2, "radiusY": 2, "ellipselabels": ["bolt"]},
            }
        ],
        [good, {**good}],  # the same region id twice
        [{"id": "u", "type": "rectanglelabels", "from_name": "label", "to_name": "image", "value": "x"}],
        [rect(x=-1e9, width=2e9)],
        ["not an object"],
    ]


def scenario_malformed(url: str, token: str, work: Path) -> Row:
    from autolabel.studio import state as studio_state
    from autolabel.studio.client import StudioClient

    row = Row("malformed")
    ws, truth, scenes = make_workspace(work / "malformed", 40, url, "faults malformed", seed=11)
    with StudioClient(url, token) as client:
        push(ws, client)
        with ws.open_store() as store:
            project = studio_state.find_project(store, url, ws.config.studio.project_title)
            images = {im.id: im for im in store.images()}
        tasks = {
            t["data"]["autolabel_image_id"]: t["id"]
            for t in client.iter_tasks(project.project_id, fields="task_only")
        }
        bad_images = sorted(tasks)[: len(malformed_results(1, 1))]
        refused = 0
        for image_id, result in zip(
            bad_images, malformed_results(images[bad_images[0]].width, images[bad_images[0]].height)
        ):
            try:
                client.create_annotation(tasks[image_id], result)
            except Exception:  # the server itself refused it (or could not even encode NaN): nothing to pull  # noqa: BLE001
                refused += 1
        # what the server kept is what was injected; the replay annotator answers every other task
        stamps = {t["id"]: t for t in client.iter_task_stamps(project.project_id)}
        malformed = {i for i in bad_images if (stamps.get(tasks[i]) or {}).get("annotations")}
        row.faults = len(malformed)
        row.note += f"{refused} refused by Label Studio itself; "
        answer(ws, client, scenes)
        annotated = set(tasks) - malformed
        for _ in range(2):
            guarded(row, pull, ws, client)
        check(ws, client, truth, annotated, row)
        with ws.open_store() as store:
            held = len(studio_state.quarantined(store))
        row.note += f"{held} held back with a reason"
    return row


def scenario_two_workspaces(url: str, token: str, work: Path) -> Row:
    from autolabel.studio.client import StudioClient

    row = Row("two-workspaces", faults=1)
    a = make_workspace(work / "two-a", 12, url, "faults shared title", seed=21)
    c = make_workspace(work / "two-c", 12, url, "faults shared title", seed=22)
    with StudioClient(url, token) as client:
        for ws, _, scenes in (c, a):
            guarded(row, push, ws, client)
            guarded(row, answer, ws, client, scenes)
        for ws, truth, _ in (a, c):
            guarded(row, pull, ws, client)
            check(ws, client, truth, annotated_images(ws), row)
    return row


class FaultTransport:
    """An httpx transport that fails a seeded share of requests the ways a network and a busy server do."""

    def __init__(self, seed: int, rate: float = 0.25):
        import httpx

        self.inner = httpx.HTTPTransport()
        self.rng = random.Random(seed)
        self.rate = rate
        self.injected = 0

    def handle_request(self, request):
        import httpx

        roll = self.rng.random()
        if roll < self.rate:
            self.injected += 1
            kind = self.rng.choice(["500", "timeout-before", "timeout-after", "401", "502"])
            if kind == "timeout-before":
                raise httpx.ReadTimeout("injected", request=request)
            if kind == "timeout-after":  # the server did the write, the answer is lost
                self.inner.handle_request(request).read()
                raise httpx.ReadTimeout("injected after the write", request=request)
            return httpx.Response(int(kind), request=request, content=b"injected")
        return self.inner.handle_request(request)

    def close(self):
        self.inner.close()


def scenario_http(url: str, token: str, work: Path) -> Row:
    from autolabel.studio.client import StudioClient

    row = Row("http")
    ws, truth, scenes = make_workspace(work / "http", 60, url, "faults http", seed=31)
    transport = FaultTransport(seed=5)
    faulty = StudioClient(url, token, transport=transport, retries=3, backoff=0.05, timeout=30)
    for _ in range(30):  # a user reruns the command until it finishes
        summary = guarded(row, push, ws, faulty)
        if summary is not None:
            break
    with StudioClient(url, token) as clean:
        answer(ws, clean, scenes)
        annotated = annotated_images(ws)
        for _ in range(30):
            if guarded(row, pull, ws, faulty) is not None:
                break
        guarded(row, pull, ws, clean)  # and once more on a calm day: nothing may change
        row.faults = transport.injected
        check(ws, clean, truth, annotated, row)
    return row


def _kill_studio(studio_dir: Path) -> None:
    state = json.loads((studio_dir / "server.json").read_text())
    try:
        os.killpg(int(state["pid"]), signal.SIGKILL)
    except ProcessLookupError:
        pass
    time.sleep(1.0)


def scenario_kill_studio(url: str, token: str, work: Path, studio_dir: Path, port: int, phase: str) -> Row:
    from autolabel.studio import server
    from autolabel.studio.client import StudioClient

    row = Row(f"kill-studio-{phase}")
    ws, truth, scenes = make_workspace(work / f"kill-{phase}", 120, url, f"faults kill {phase}", seed=41)
    images_root = ws.image_root.parent.parent
    for delay in (0.5, 1.5, 3.0):
        with StudioClient(url, token, retries=1, backoff=0.05, timeout=20) as client:
            if phase == "pull":
                guarded(row, push, ws, client)
                guarded(row, answer, ws, client, scenes)
            action = push if phase == "push" else pull
            worker = threading.Thread(target=guarded, args=(row, action, ws, client))
            worker.start()
            time.sleep(delay)
            _kill_studio(studio_dir)
            row.faults += 1
            worker.join(timeout=120)
        server.start(studio_dir, images_root, port, timeout=600)
    with StudioClient(url, token) as client:
        guarded(row, push, ws, client)
        guarded(row, answer, ws, client, scenes)
        guarded(row, pull, ws, client)
        check(ws, client, truth, annotated_images(ws), row)
    return row


def scenario_kill_autolabel(url: str, token: str, work: Path) -> Row:
    from autolabel.studio.client import StudioClient

    row = Row("kill-autolabel")
    ws, truth, scenes = make_workspace(work / "kill-al", 120, url, "faults kill autolabel", seed=51)
    env = {**os.environ, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": token}
    cli = [sys.executable, "-m", "autolabel.cli.app"]
    for command, delays in (("push", (1.0, 2.0, 3.5)), ("pull", (0.5, 1.5, 2.5))):
        if command == "pull":
            with StudioClient(url, token) as client:
                answer(ws, client, scenes)
        for delay in delays:
            proc = subprocess.Popen(
                [*cli, command, "-w", str(ws.root), "--batch-size", "10"]
                if command == "push"
                else [*cli, command, "-w", str(ws.root)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            row.faults += 1
        done = subprocess.run(
            [*cli, command, "-w", str(ws.root)], env=env, capture_output=True, text=True, check=False
        )
        row.tracebacks += int("Traceback" in done.stdout + done.stderr)
    with StudioClient(url, token) as client:
        check(ws, client, truth, annotated_images(ws), row)
    return row


LOOP_STEPS = ("select", "prelabel", "push", "wait", "split", "train", "eval")


def _step_started(db_path: Path, round_index: int, step: str) -> bool:
    try:
        db = sqlite3.connect(db_path, timeout=1)
        row = db.execute(
            "SELECT 1 FROM loop_steps WHERE round = ? AND step = ?", (round_index, step)
        ).fetchone()
        db.close()
        return row is not None
    except sqlite3.Error:
        return False


def scenario_kill_loop(url: str, token: str, work: Path) -> Row:
    """``kill -9`` of ``autolabel loop`` inside every step of round 1 (replay annotator, tiny training),
    then the same command again: no image selected twice, every selected image labeled, one task per
    image, one finished training per round."""
    from autolabel.studio.client import StudioClient

    row = Row("kill-loop")
    env = {**os.environ, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": token}
    cli = [sys.executable, "-m", "autolabel.cli.app"]
    for step in LOOP_STEPS:
        ws, truth, scenes = make_workspace(
            work / f"kill-loop-{step}", 24, url, f"faults loop {step}", seed=61
        )
        args = [
            *cli,
            "loop",
            "-w",
            str(ws.root),
            "--recipe",
            str(REPO / "loop" / "default.yaml"),
            "--annotator",
            "replay",
            "--labels",
            str(scenes),
            "--rounds",
            "2",
            "--budget",
            "6",
            "--epochs",
            "1",
            "--imgsz",
            "64",
        ]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while not _step_started(ws.db_path, 1, step) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # inside the step
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            row.faults += 1
        proc.wait()
        rerun = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
        row.tracebacks += int("Traceback" in rerun.stdout + rerun.stderr)
        if rerun.returncode != 0:
            row.note += f"{step}: rerun exit {rerun.returncode}; "
        db = sqlite3.connect(ws.db_path)
        picked = [r[0] for r in db.execute("SELECT image_id FROM loop_batches")]
        row.duplicates += len(picked) - len(set(picked))
        runs = _finished_runs_per_round(ws)
        if runs != [(0, 1), (1, 1)]:
            row.note += f"{step}: trainings per round {runs}; "
        db.close()
        with StudioClient(url, token) as client:
            check(ws, client, truth, set(picked), row)
    return row


def _finished_runs_per_round(ws) -> list[tuple[int, int]]:
    from collections import Counter

    from autolabel import runs

    with ws.open_store() as store:
        return sorted(Counter(r.round for r in runs.all_runs(store, status="finished")).items())


def scenario_bad_images(url: str, token: str, work: Path) -> Row:
    import numpy as np
    from PIL import Image

    row = Row("bad-images")
    raw = work / "bad" / "images"
    raw.mkdir(parents=True)
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(raw / "good.jpg")
    Image.new("CMYK", (40, 30), (10, 20, 30, 40)).save(raw / "cmyk.jpg")
    Image.fromarray(np.linspace(0, 65535, 1200).reshape(30, 40).astype(np.uint16)).save(raw / "gray16.png")
    (raw / "zero.png").write_bytes(b"")
    (raw / "notes.jpg").write_text("not an image")
    (raw / "truncated.jpg").write_bytes((raw / "good.jpg").read_bytes()[:200])
    Image.new("1", (9500, 9500)).save(raw / "bomb.png")
    Image.new("RGB", (1, 1)).save(raw / "pixel.png")
    Image.new("RGB", (2, 3000)).save(raw / "sliver.png")
    with open(os.path.join(os.fsencode(raw), b"caf\xe9.jpg"), "wb") as fh:
        fh.write((raw / "good.jpg").read_bytes())
    (work / "bad" / "outside.jpg").write_bytes((raw / "good.jpg").read_bytes())
    (raw / "link.jpg").symlink_to(work / "bad" / "outside.jpg")
    (raw / "dangling.jpg").symlink_to(work / "bad" / "missing.jpg")
    (raw / "name with spaces & #.jpg").write_bytes((raw / "good.jpg").read_bytes())
    (raw / "text.txt").write_text("ignored: not an image suffix")
    row.faults = 14
    env = {**os.environ, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": token}
    cli = [sys.executable, "-m", "autolabel.cli.app"]
    ws = work / "bad" / "ws"
    for args in (
        ["init", "--images", str(raw), "-w", str(ws)],
        ["status", "-w", str(ws)],
        ["export-labels", "-w", str(ws), "--format", "coco", "--out", str(work / "bad" / "coco")],
    ):
        out = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, check=False)
        row.tracebacks += int("Traceback" in out.stdout + out.stderr)
        if out.returncode not in (0, 2):
            row.note += f"{args[0]} exit {out.returncode}; "
    db = sqlite3.connect(ws / ".autolabel" / "state.db")
    usable = {r[0] for r in db.execute("SELECT path FROM images WHERE status != 'error'")}
    row.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    expected = {"good.jpg", "cmyk.jpg", "gray16.png", "name with spaces & #.jpg"}
    row.lost = len(expected - usable)
    row.wrong = len(usable - expected)  # a bad file registered as usable
    row.note += f"{len(usable)} usable of 14"
    return row


# -- main ----------------------------------------------------------------------------------------------


def run(scenarios: list[str], work: Path) -> list[Row]:
    from autolabel.runtime import configure_environment
    from autolabel.studio import server

    configure_environment(work / "cache")
    studio_dir, images_root = work / "studio", work
    port = server.free_port()
    state = server.start(studio_dir, images_root / "root", port, timeout=900)
    token = server.read_credentials(studio_dir).token
    rows = []
    try:
        table = {
            "malformed": lambda: scenario_malformed(state.url, token, work),
            "two-workspaces": lambda: scenario_two_workspaces(state.url, token, work),
            "http": lambda: scenario_http(state.url, token, work),
            "kill-studio-push": lambda: scenario_kill_studio(
                state.url, token, work, studio_dir, port, "push"
            ),
            "kill-studio-pull": lambda: scenario_kill_studio(
                state.url, token, work, studio_dir, port, "pull"
            ),
            "kill-autolabel": lambda: scenario_kill_autolabel(state.url, token, work),
            "kill-loop": lambda: scenario_kill_loop(state.url, token, work),
            "bad-images": lambda: scenario_bad_images(state.url, token, work),
        }
        for name in scenarios:
            started = time.perf_counter()
            row = table[name]()
            row.note = (row.note + f" ({time.perf_counter() - started:.0f} s)").strip()
            print(json.dumps(asdict(row)), flush=True)
            rows.append(row)
    finally:
        server.stop(studio_dir)
    return rows


ALL = [
    "malformed",
    "two-workspaces",
    "http",
    "kill-studio-push",
    "kill-studio-pull",
    "kill-autolabel",
    "kill-loop",
    "bad-images",
]
QUICK = ["malformed", "two-workspaces", "http", "bad-images"]


def render(rows: list[Row]) -> str:
    lines = [
        (
            "| scenario | faults injected | annotations lost | wrong image | duplicate tasks | tracebacks |"
            " integrity_check | note |"
        ),
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.faults} | {r.lost} | {r.wrong} | {r.duplicates} | {r.tracebacks} |"
            f" {r.integrity} | {r.note} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the CI subset")
    parser.add_argument("--scenarios", nargs="+", choices=ALL)
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args()
    scenarios = args.scenarios or (QUICK if args.quick else ALL)
    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    rows = run(scenarios, work)
    print(render(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"command": " ".join(sys.argv), "rows": [asdict(r) for r in rows]}, indent=2)
        )
    bad = [r for r in rows if r.lost or r.wrong or r.duplicates or r.tracebacks or r.integrity != "ok"]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
