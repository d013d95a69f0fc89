"""A real Label Studio server for the studio tests (one per test session) and workspace builders.

Import the fixtures into a test module: ``from tests.conftest_studio import studio_server, ...``.
The server binds 127.0.0.1 on a free port, keeps all its data in a temp dir, and is stopped when
the session ends. Its local-files root is ``images_base``; each test workspace puts its images in
a folder below it.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

CLASSES = ["bolt", "nut", "washer"]
_counter = itertools.count()


@dataclass
class StudioServer:
    url: str
    token: str
    studio_dir: Path
    images_base: Path
    port: int


def _template_dir() -> Path:
    """A migrated Label Studio database shared by test sessions on this machine: a fresh start
    spends 30 s to minutes on migrations, a start from a migrated copy takes seconds."""
    import tempfile

    from autolabel.studio import server

    version = server.installed_version(server.find_label_studio_bin()) or "unknown"
    return Path(tempfile.gettempdir()) / f"autolabel-studio-template-{version}"


def _seed_from_template(studio_dir: Path) -> bool:
    import shutil

    template = _template_dir()
    if not (template / "data" / "label_studio.sqlite3").is_file():
        return False
    (studio_dir / "data").mkdir(parents=True)
    shutil.copy2(template / "data" / "label_studio.sqlite3", studio_dir / "data" / "label_studio.sqlite3")
    shutil.copy2(template / "credentials.json", studio_dir / "credentials.json")
    return True


def _save_template(studio_dir: Path) -> None:
    import os
    import shutil
    import sqlite3
    import tempfile

    template = _template_dir()
    if template.exists():
        return
    staging = Path(tempfile.mkdtemp(prefix=template.name + ".", dir=template.parent))
    (staging / "data").mkdir()
    src = sqlite3.connect(studio_dir / "data" / "label_studio.sqlite3")
    dst = sqlite3.connect(staging / "data" / "label_studio.sqlite3")
    with dst:
        src.backup(dst)  # a consistent snapshot of the live database
    src.close()
    dst.close()
    shutil.copy2(studio_dir / "credentials.json", staging / "credentials.json")
    os.chmod(staging / "credentials.json", 0o600)
    try:
        staging.rename(template)
    except OSError:  # another session won the race
        shutil.rmtree(staging, ignore_errors=True)


@pytest.fixture(scope="session")
def studio_server(tmp_path_factory) -> StudioServer:
    from autolabel.studio import server

    base = tmp_path_factory.mktemp("studio-session")
    images_base = base / "images"
    images_base.mkdir()
    studio_dir = base / "studio"
    seeded = _seed_from_template(studio_dir)
    port = server.free_port()
    try:
        # The server's document root is the image root's parent: every workspace below images_base works.
        state = server.start(studio_dir, images_base / "root", port, timeout=900)
        if not seeded:
            _save_template(studio_dir)
        creds = server.read_credentials(studio_dir)
        yield StudioServer(state.url, creds.token, studio_dir, images_base, port)
    finally:
        server.stop(studio_dir)


def _draw_image(
    path: Path, width: int, height: int, boxes: list[tuple[int, float, float, float, float]], rng
) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(0, 80, 3)))
    draw = ImageDraw.Draw(img)
    for cls, x1, y1, x2, y2 in boxes:
        draw.rectangle([x1, y1, x2, y2], fill=((cls * 90 + 60) % 256, 200, 120))
    img.save(path, quality=85)


@dataclass
class StudioWorkspace:
    ws: object  # autolabel.workspace.Workspace
    gt_dir: Path  # YOLO ground truth: labels/<stem>.txt + data.yaml
    truth: dict  # image path -> (xyxy array, class ids)
    title: str


def make_workspace(
    studio: StudioServer,
    tmp_path: Path,
    n_images: int,
    *,
    seed: int = 0,
    predict: bool = True,
    empty_every: int = 0,
) -> StudioWorkspace:
    """A registered workspace whose images live below the server's local-files root.

    Ground truth: 0-3 random boxes per image (none on every ``empty_every``-th image). Predictions
    (what a proposer would have stored) are the ground truth shifted a little, with one box dropped
    on odd images and scores in (0.3, 1)."""
    from autolabel import detections as dets
    from autolabel.config import WorkspaceConfig
    from autolabel.formats import yolo
    from autolabel.registry import register_images
    from autolabel.workspace import Workspace

    name = f"ws{next(_counter)}-{tmp_path.name}"[:60]
    images = studio.images_base / name
    images.mkdir()
    gt = tmp_path / "gt"
    (gt / "labels").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    truth = {}
    for i in range(n_images):
        width, height = int(rng.integers(96, 200)), int(rng.integers(80, 160))
        n_boxes = 0 if (empty_every and i % empty_every == 0) else int(rng.integers(1, 4))
        boxes = []
        for _ in range(n_boxes):
            w, h = int(rng.integers(12, width // 2)), int(rng.integers(12, height // 2))
            x1, y1 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            boxes.append((int(rng.integers(0, len(CLASSES))), x1, y1, x1 + w, y1 + h))
        stem = f"img_{i:04d}"
        _draw_image(images / f"{stem}.jpg", width, height, boxes, rng)
        det = dets.make([b[1:] for b in boxes] or np.zeros((0, 4)), [b[0] for b in boxes])
        (gt / "labels" / f"{stem}.txt").write_text("\n".join(yolo.to_lines(det, width, height)) + "\n")
        truth[f"{stem}.jpg"] = (det.xyxy.copy(), det.class_id.copy())
    (gt / "data.yaml").write_text(yolo.data_yaml(CLASSES, "images", "images"))
    root = tmp_path / "workspace"
    title = f"t{next(_counter)} {name}"[:50]  # Label Studio allows 50 characters
    config = WorkspaceConfig(images=str(images), studio={"url": studio.url, "project_title": title})
    ws = Workspace.create(root, config)
    with ws.open_store() as store:
        register_images(store, ws.image_root, ws.config.grouping)
        store.ensure_classes(CLASSES)
        if predict:
            save_shifted_predictions(store, truth, "proposer-v1", rng)
    return StudioWorkspace(ws=ws, gt_dir=gt, truth=truth, title=title)


def save_shifted_predictions(store, truth: dict, model_version: str, rng, shift: float = 3.0) -> None:
    from autolabel import detections as dets

    rows = []
    for image in store.images():
        xyxy, cls = truth[image.path]
        keep = np.ones(len(cls), dtype=bool)
        if image.id % 2 and len(cls):
            keep[0] = False
        xyxy = xyxy[keep] + shift
        det = dets.make(xyxy, cls[keep], rng.uniform(0.3, 1.0, int(keep.sum())))
        det = dets.clip_to_image(det, image.width, image.height)
        rows.append((image.id, f"key-{model_version}", model_version, dets.to_json(det), None))
    store.save_predictions(rows)


def client_for(studio: StudioServer):
    from autolabel.studio.client import StudioClient

    return StudioClient(studio.url, studio.token)


def stored_labels(store) -> dict:
    from autolabel import detections as dets

    paths = {im.id: im.path for im in store.images(include_errors=True)}
    return {paths[i]: dets.from_json(text) for i, text in store.labels().items()}


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True)
