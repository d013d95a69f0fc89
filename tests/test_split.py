import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from autolabel import dataset
from autolabel import detections as dets
from autolabel.cli.app import app
from autolabel.errors import AutolabelError
from autolabel.images import file_sha256
from autolabel.store import Store
from autolabel.synthetic import generate_scene, sample_style

runner = CliRunner()
BOX = dets.to_json(dets.make([[1, 1, 5, 5]], [0]))


class Builder:
    """A store whose labeled images are real files (random noise, so no accidental near-duplicates)."""

    def __init__(self, root: Path):
        self.root = root
        self.store = Store.open(root / "state.db")
        self.rng = np.random.default_rng(0)
        self.count = 0

    def add(self, group: str, pixels: np.ndarray | None = None, name: str | None = None, fmt="PNG") -> int:
        if pixels is None:
            pixels = self.rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
        self.count += 1
        rel = f"{group}/{name or f'im{self.count:04d}'}.{fmt.lower()}"
        path = self.root / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, format=fmt)
        self.store.add_images(
            [
                {
                    "path": rel,
                    "sha256": file_sha256(path),
                    "size_bytes": path.stat().st_size,
                    "width": pixels.shape[1],
                    "height": pixels.shape[0],
                    "source_group": group,
                }
            ]
        )
        image_id = self.store.conn.execute("SELECT id FROM images WHERE path = ?", (rel,)).fetchone()[0]
        self.store.set_labels(image_id, "import", BOX)
        return image_id

    def split(self, **kwargs):
        return dataset.split(self.store, self.root / "images", **kwargs)

    def status(self) -> dict[int, str]:
        return {im.id: im.status for im in self.store.images()}

    def groups(self) -> dict[int, str]:
        return {im.id: im.source_group for im in self.store.images()}


def _by_split(status: dict[int, str]) -> tuple[set[int], set[int]]:
    return {i for i, s in status.items() if s == "labeled"}, {
        i for i, s in status.items() if s == "validation"
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rounds=st.lists(
        st.tuples(st.lists(st.integers(0, 7), min_size=1, max_size=7), st.integers(0, 3)),
        min_size=1,
        max_size=4,
    ),
    seed=st.integers(0, 5),
    fraction=st.floats(0.1, 0.6),
)
def test_no_group_crosses_splits_and_val_never_shrinks(rounds, seed, fraction):
    with tempfile.TemporaryDirectory() as tmp:
        b = Builder(Path(tmp))
        train_before, val_before = set(), set()
        for new_images, grow in rounds:
            for g in new_images:
                b.add(f"g{g}")
            try:
                b.split(val_fraction=fraction, seed=seed, grow_val=grow)
            except AutolabelError as exc:
                # only refused when no val exists yet and everything is one group
                assert not val_before and len(set(b.groups().values())) == 1, exc
                continue
            train, val = _by_split(b.status())
            groups = b.groups()
            assert val and train
            assert val_before <= val, "an image left val"
            assert train_before <= train, "an assigned train image moved"
            assert not ({groups[i] for i in train} & {groups[i] for i in val}), "a group straddles"
            if val_before and grow == 0:  # without --grow-val val only gains members of its own groups
                assert {groups[i] for i in val} == {groups[i] for i in val_before}
            train_before, val_before = train, val
        b.store.close()


def test_val_is_frozen_new_groups_go_to_train_and_grow_val_adds_whole_new_groups(tmp_path):
    b = Builder(tmp_path)
    for g in range(5):
        for _ in range(4):
            b.add(f"g{g}")
    first = b.split(val_fraction=0.2, seed=1)
    assert (first.n_train, first.n_val) == (16, 4)
    _, val = _by_split(b.status())
    (val_group,) = {b.groups()[i] for i in val}
    train_group = next(f"g{g}" for g in range(5) if f"g{g}" != val_group)
    joins_val, joins_train = b.add(val_group), b.add(train_group)
    fresh = [b.add("new1"), b.add("new1"), b.add("new2")]
    second = b.split(val_fraction=0.9, seed=7)  # the fraction only matters for the first split
    status = b.status()
    assert status[joins_val] == "validation" and status[joins_train] == "labeled"
    assert all(status[i] == "labeled" for i in fresh)
    assert (second.added_train, second.added_val) == (4, 1)
    more = [b.add("new3") for _ in range(2)] + [b.add("new4") for _ in range(5)]
    third = b.split(grow_val=2)
    status = b.status()
    assert [status[i] for i in more[:2]] == ["validation"] * 2 and third.added_val == 2
    assert all(status[i] == "labeled" for i in more[2:])
    # a rerun with nothing new changes nothing
    again = b.split(grow_val=0)
    assert (again.added_train, again.added_val) == (0, 0) and b.status() == status


def test_val_status_is_restored_and_never_demoted(tmp_path):
    b = Builder(tmp_path)
    for g in range(3):
        b.add(f"g{g}")
        b.add(f"g{g}")
    b.split(seed=0)
    _, val = _by_split(b.status())
    b.store.set_status(val, "labeled")  # someone demoted them by hand
    b.split()
    assert _by_split(b.status())[1] == val


def test_one_group_cannot_be_split_without_leaking(tmp_path):
    b = Builder(tmp_path)
    for _ in range(5):
        b.add("only")
    with pytest.raises(AutolabelError, match="form one group"):
        b.split()


def _scene(seed: int, style) -> np.ndarray:
    rgb, _ = generate_scene(np.random.default_rng(seed), 96, style=style)
    return rgb


def _reencoded(rgb: np.ndarray) -> np.ndarray:
    small = Image.fromarray(rgb).resize((61, 61), Image.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=70)
    return np.asarray(Image.open(buf).convert("RGB"))


def _near_duplicate_setup(root: Path):
    b = Builder(root)
    styles = [sample_style(np.random.default_rng(100 + g)) for g in range(6)]
    pairs = []
    for g, style in enumerate(styles):
        for k in range(3):
            image_id = b.add(f"s{g}", _scene(10 * g + k, style), fmt="JPEG")
            if k == 0 and g % 2 == 0:  # a resized, re-encoded copy of it lands in the next session's folder
                copy = b.add(f"s{g + 1}", _reencoded(_scene(10 * g + k, style)), name=f"copy{g}", fmt="JPEG")
                pairs.append((image_id, copy))
    return b, pairs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_near_duplicates_land_in_the_same_split(tmp_path, seed):
    b, pairs = _near_duplicate_setup(tmp_path)
    result = b.split(seed=seed, val_fraction=0.3)
    status = b.status()
    assert result.near_duplicate_pairs >= len(pairs)
    assert all(status[a] == status[c] for a, c in pairs)
    report = dataset.split_report(b.store, tmp_path / "images")
    assert report.leaks == [] and report.straddling == []


def test_without_near_duplicate_merging_copies_leak_and_the_report_lists_them(tmp_path):
    leaking_seeds = 0
    for seed in range(4):
        b, pairs = _near_duplicate_setup(tmp_path / str(seed))
        b.split(seed=seed, val_fraction=0.3, threshold=1.01)  # near-duplicate detection off
        status = b.status()
        separated = {(a, c) for a, c in pairs if status[a] != status[c]}
        leaking_seeds += bool(separated)
        report = dataset.split_report(b.store, tmp_path / str(seed) / "images")
        paths = {im.id: im.path for im in b.store.images()}
        leaked = {tuple(sorted((a, b_))) for a, _, b_, _, _ in report.leaks}
        assert {tuple(sorted((paths[a], paths[c]))) for a, c in separated} <= leaked
        assert all(score >= 0.95 for *_, score in report.leaks)
    assert leaking_seeds, "the setup must be able to leak, else the near-duplicate test proves nothing"


def test_groups_csv_ties_folders_together(tmp_path):
    b = Builder(tmp_path)
    for g in range(6):
        b.add(f"g{g}")
        b.add(f"g{g}")
    paths = {im.path: im.id for im in b.store.images()}
    csv_path = tmp_path / "groups.csv"
    csv_path.write_text(
        "path,group\n" + "".join(f"{p},rig\n" for p in paths if p.split("/")[0] in ("g0", "g1", "g2"))
    )
    dataset.set_explicit_groups(b.store, dataset.load_groups_csv(csv_path))
    for seed in range(4):
        b.store.conn.execute("DELETE FROM split_assignments")
        b.store.set_status(paths.values(), "labeled")
        b.split(seed=seed, val_fraction=0.4)
        status = b.status()
        tied = {status[i] for p, i in paths.items() if p.split("/")[0] in ("g0", "g1", "g2")}
        assert len(tied) == 1
    with pytest.raises(AutolabelError, match="unregistered"):
        dataset.set_explicit_groups(b.store, {"nope/x.png": "a"})


def test_split_command_with_report(tmp_path):
    from autolabel.synthetic import generate_dataset

    generate_dataset(tmp_path / "photos", n=8, seed=0, imgsz=64, groups=4)
    ws = tmp_path / "ws"
    assert (
        runner.invoke(app, ["init", "--images", str(tmp_path / "photos" / "images"), "-w", str(ws)]).exit_code
        == 0
    )
    labels = tmp_path / "photos" / "labels"
    result = runner.invoke(
        app, ["import", "--labels", str(labels), "--format", "yolo", "--add-classes", "-w", str(ws)]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["split", "--report", "--val-fraction", "0.25", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    assert "train 6 images, val 2 images (4 groups)" in result.output
    assert "leaks: 0 near-duplicate pairs" in result.output
    result = runner.invoke(app, ["split", "--val-fraction", "1.5", "-w", str(ws)])
    assert result.exit_code == 2


def test_split_report_command_shows_leaks(tmp_path):
    for seed in range(4):
        root = tmp_path / str(seed)
        b, _pairs = _near_duplicate_setup(root)
        b.store.close()
        ws = root / "ws"
        (ws / ".autolabel").mkdir(parents=True)
        (ws / "autolabel.yaml").write_text(f"images: {root / 'images'}\n")
        (root / "state.db").rename(ws / ".autolabel" / "state.db")
        for suffix in ("-wal", "-shm"):
            (root / f"state.db{suffix}").unlink(missing_ok=True)
        args = ["split", "--seed", str(seed), "--val-fraction", "0.3", "-w", str(ws)]
        assert runner.invoke(app, [*args, "--near-dup-threshold", "1.01"]).exit_code == 0
        result = runner.invoke(app, ["split", "--report", "-w", str(ws)])
        assert result.exit_code == 0, result.output
        if "leaks: 0 near-duplicate pairs" not in result.output:
            assert "near-duplicates across splits" in result.output and "copy" in result.output
            return
    raise AssertionError("no seed produced a leak to report")
