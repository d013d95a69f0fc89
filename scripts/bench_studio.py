"""Benchmark the Label Studio sync: push N tasks with predictions, replay-annotate, pull N annotations.

Compares against one request per task (the naive client loop) measured on a smaller sample and
extrapolated linearly to N. Runs against a server you give (--url/--token) or starts its own in a
temp dir (a fresh start runs migrations first; that time is not part of any measurement).

    .venv/bin/python scripts/bench_studio.py --n 5000 --baseline-n 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLASSES = ["bolt", "nut", "washer", "screw"]


def make_workspace(base: Path, n: int, seed: int = 0):
    """n small JPEGs with 1-4 boxes each, registered, with stored predictions; YOLO ground truth."""
    from PIL import Image

    from autolabel import detections as dets
    from autolabel.config import WorkspaceConfig
    from autolabel.formats import yolo
    from autolabel.registry import register_images
    from autolabel.workspace import Workspace

    images = base / "images"
    gt = base / "gt"
    images.mkdir(parents=True)
    (gt / "labels").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    truth = {}
    width, height = 160, 120
    for i in range(n):
        stem = f"img_{i:05d}"
        Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 255, 3))).save(
            images / f"{stem}.jpg"
        )
        k = int(rng.integers(1, 5))
        x1 = rng.uniform(0, width - 40, k)
        y1 = rng.uniform(0, height - 40, k)
        xyxy = np.stack([x1, y1, x1 + rng.uniform(8, 40, k), y1 + rng.uniform(8, 40, k)], 1)
        det = dets.make(xyxy, rng.integers(0, len(CLASSES), k))
        (gt / "labels" / f"{stem}.txt").write_text("\n".join(yolo.to_lines(det, width, height)) + "\n")
        truth[f"{stem}.jpg"] = det
    (gt / "data.yaml").write_text(yolo.data_yaml(CLASSES, "images", "images"))
    ws = Workspace.create(base / "workspace", WorkspaceConfig(images=str(images)))
    with ws.open_store() as store:
        register_images(store, ws.image_root, ws.config.grouping)
        store.ensure_classes(CLASSES)
        rows = []
        for image in store.images():
            det = truth[image.path]
            shifted = dets.make(
                det.xyxy + rng.normal(0, 2, det.xyxy.shape), det.class_id, rng.uniform(0.3, 1.0, len(det))
            )
            shifted = dets.clip_to_image(shifted, image.width, image.height)
            rows.append((image.id, "bench", "bench-proposer", dets.to_json(shifted), None))
        store.save_predictions(rows)
    return ws, gt


def naive_push(client, ws, project_id: int, n: int) -> float:
    """One import request per task (what a simple per-image client loop does)."""
    from autolabel import detections as dets
    from autolabel.formats import labelstudio as lsfmt
    from autolabel.studio import push as studio_push
    from autolabel.studio import server

    with ws.open_store() as store:
        images = store.images()[:n]
        preds = store.latest_predictions([im.id for im in images])
        names = store.class_names()
    doc_root = server.document_root(ws.image_root)
    start = time.perf_counter()
    for image in images:
        model_version, det_json = preds[image.id]
        task = {
            "data": {
                "image": studio_push.local_files_url(ws.image_root, doc_root, image.path),
                "autolabel_image_id": image.id,
            },
            "predictions": [
                lsfmt.prediction(dets.from_json(det_json), names, image.width, image.height, model_version)
            ],
        }
        client.import_tasks(project_id, [task])
    return time.perf_counter() - start


def naive_pull(client, task_ids: list[int]) -> float:
    """One GET per task (task with its annotations), as a per-task client loop does."""
    start = time.perf_counter()
    for task_id in task_ids:
        client.request("GET", f"/api/tasks/{task_id}/")
    return time.perf_counter() - start


def repull(args) -> None:
    from autolabel.studio import pull as studio_pull
    from autolabel.studio import state as studio_state
    from autolabel.studio.client import StudioClient
    from autolabel.workspace import Workspace

    ws = Workspace.load(args.workdir / "data" / "workspace")
    results: dict = {"n": args.n, "baseline_n": args.baseline_n, "mode": "repull"}
    with StudioClient(args.url, args.token) as client, ws.open_store() as store:
        studio_state.ensure_schema(store)
        (key, title) = store.conn.execute(
            "SELECT id, title FROM studio_projects WHERE title NOT LIKE '%naive%' ORDER BY id LIMIT 1"
        ).fetchone()
        with store.transaction():
            for table in ("studio_annotations", "studio_corrections", "labels"):
                store.conn.execute(f"DELETE FROM {table}")
            store.conn.execute("UPDATE studio_projects SET pulled_until = NULL")
            store.conn.execute("UPDATE images SET status = 'in_review' WHERE status = 'labeled'")
        start = time.perf_counter()
        pulled = studio_pull.pull(store, client, title=title)
        results["pull_s"] = time.perf_counter() - start
        assert pulled.labeled == args.n, pulled
        start = time.perf_counter()
        studio_pull.pull(store, client, title=title)
        results["repull_noop_s"] = time.perf_counter() - start
        task_ids = [
            r[0]
            for r in store.conn.execute(
                "SELECT task_id FROM studio_tasks WHERE project = ? ORDER BY task_id LIMIT ?",
                (key, args.baseline_n),
            )
        ]
        results["naive_pull_sample_s"] = naive_pull(client, task_ids)
    results["naive_pull_extrapolated_s"] = results["naive_pull_sample_s"] * args.n / args.baseline_n
    results["pull_speedup"] = results["naive_pull_extrapolated_s"] / results["pull_s"]
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def main() -> None:
    from autolabel.runtime import configure_environment

    configure_environment(Path(tempfile.mkdtemp(prefix="bench-studio-cache-")))  # nothing into $HOME
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--baseline-n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--url")
    parser.add_argument(
        "--token",
        default=os.environ.get("LABEL_STUDIO_API_KEY"),
        help="Default: $LABEL_STUDIO_API_KEY (keeps the token out of the process list).",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="Write the results here too.")
    parser.add_argument(
        "--repull",
        action="store_true",
        help="Reuse --workdir from an earlier run (pushed and annotated): forget what was pulled, "
        "then time the pull again (skips the slow replay of N annotations).",
    )
    args = parser.parse_args()
    if args.repull:
        return repull(args)

    from autolabel.progress import progress_bar
    from autolabel.studio import pull as studio_pull
    from autolabel.studio import push as studio_push
    from autolabel.studio import replay, server
    from autolabel.studio import state as studio_state
    from autolabel.studio.client import StudioClient

    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-studio-"))
    t0 = time.perf_counter()
    ws, gt = make_workspace(base / "data", args.n)
    print(f"workspace with {args.n} images in {time.perf_counter() - t0:.1f} s", flush=True)

    own_server = args.url is None
    studio_dir = base / "studio"
    if own_server:
        state = server.start(studio_dir, ws.image_root, server.free_port(), timeout=1800)
        url, token = state.url, server.read_credentials(studio_dir).token
    else:
        url, token = args.url, args.token
    results: dict = {
        "n": args.n,
        "baseline_n": args.baseline_n,
        "batch_size": args.batch_size,
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
    }
    try:
        with StudioClient(url, token) as client, ws.open_store() as store:
            studio_state.ensure_schema(store)
            title = f"bench {int(time.time())}"
            doc_root = server.document_root(ws.image_root)
            start = time.perf_counter()
            pushed = studio_push.push(
                store,
                client,
                image_root=ws.image_root,
                document_root=doc_root,
                title=title,
                batch_size=args.batch_size,
            )
            results["push_s"] = time.perf_counter() - start
            assert pushed.created == args.n, pushed
            start = time.perf_counter()
            again = studio_push.push(
                store, client, image_root=ws.image_root, document_root=doc_root, title=title
            )
            results["repush_noop_s"] = time.perf_counter() - start
            assert again.created == 0
            print(
                f"push {args.n}: {results['push_s']:.1f} s (re-push no-op {results['repush_noop_s']:.1f} s)",
                flush=True,
            )

            project = studio_state.find_project(store, client.url, title)
            start = time.perf_counter()
            with progress_bar("replaying", total=args.n, unit="task") as advance:
                answered = replay.replay(client, project.project_id, gt, workers=4, advance=advance)
            results["replay_s"] = time.perf_counter() - start
            assert answered.answered == args.n

            start = time.perf_counter()
            pulled = studio_pull.pull(store, client, title=title)
            results["pull_s"] = time.perf_counter() - start
            assert pulled.labeled == args.n, pulled
            start = time.perf_counter()
            again = studio_pull.pull(store, client, title=title)
            results["repull_noop_s"] = time.perf_counter() - start
            print(
                f"pull {args.n}: {results['pull_s']:.1f} s (incremental re-pull {results['repull_noop_s']:.1f} s)",
                flush=True,
            )

            # Baselines on a sample, extrapolated linearly.
            task_ids = [
                r[0]
                for r in store.conn.execute(
                    "SELECT task_id FROM studio_tasks WHERE project = ? ORDER BY task_id LIMIT ?",
                    (project.key, args.baseline_n),
                )
            ]
            naive = client.create_project(
                f"{title} naive", client.get_project(project.project_id)["label_config"]
            )
            client.ensure_local_storage(naive["id"], ws.image_root)
            results["naive_push_sample_s"] = naive_push(client, ws, naive["id"], args.baseline_n)
            results["naive_pull_sample_s"] = naive_pull(client, task_ids)
    finally:
        if own_server:
            server.stop(studio_dir)
    scale = args.n / args.baseline_n
    results["naive_push_extrapolated_s"] = results["naive_push_sample_s"] * scale
    results["naive_pull_extrapolated_s"] = results["naive_pull_sample_s"] * scale
    results["push_speedup"] = results["naive_push_extrapolated_s"] / results["push_s"]
    results["pull_speedup"] = results["naive_pull_extrapolated_s"] / results["pull_s"]
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in results.items()}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
