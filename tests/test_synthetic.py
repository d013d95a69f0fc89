import dataclasses

import numpy as np
import pytest
from typer.testing import CliRunner

from autolabel import synthetic
from autolabel.cli.app import app
from autolabel.formats import yolo


def _flat_style(**overrides):
    """A session without lighting, blur or noise: every non-object pixel is the base colour."""
    style = synthetic.sample_style(np.random.default_rng(0), background="plain")
    return dataclasses.replace(
        style,
        gain=1.0,
        tint=(1.0, 1.0, 1.0),
        light_strength=0.0,
        blur_sigma=0.0,
        noise_sigma=0.0,
        frame_gain_jitter=0.0,
        **overrides,
    )


def test_same_seed_same_scene_and_other_seed_differs():
    a_rgb, a_det = synthetic.generate_scene(np.random.default_rng(7), 128)
    b_rgb, b_det = synthetic.generate_scene(np.random.default_rng(7), 128)
    c_rgb, _c_det = synthetic.generate_scene(np.random.default_rng(8), 128)
    assert np.array_equal(a_rgb, b_rgb)
    assert np.array_equal(a_det.xyxy, b_det.xyxy) and np.array_equal(a_det.class_id, b_det.class_id)
    assert not np.array_equal(a_rgb, c_rgb)


@pytest.mark.parametrize("seed", range(12))
def test_boxes_are_the_tight_extent_of_the_drawn_pixels(seed):
    style = _flat_style()
    rgb, det = synthetic.generate_scene(
        np.random.default_rng(seed),
        (160, 120),
        style=style,
        n_objects=(2, 6),
        blur=False,
        noise=False,
        with_masks=True,
    )
    assert len(det) >= 1
    background = np.asarray(style.base_color, np.uint8)
    drawn = np.any(rgb != background, axis=2)
    # Every pixel that differs from the background belongs to exactly the union of visible masks.
    assert np.array_equal(drawn, det.mask.any(axis=0))
    for box, mask in zip(det.xyxy, det.mask):
        x1, y1, x2, y2 = box.astype(int)
        assert mask.sum() > 0
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert (x1, y1, x2, y2) == (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        # tight: each edge of the box touches a drawn pixel of this object
        assert mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any()
        assert mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any()


def test_occlusion_keeps_every_object_mostly_visible():
    for seed in range(20):
        _, det = synthetic.generate_scene(
            np.random.default_rng(seed), 128, n_objects=(6, 9), scale=(0.3, 0.45), with_masks=True
        )
        for box, mask in zip(det.xyxy, det.mask):
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
            assert mask.sum() >= 16


def test_dataset_layout_labels_and_determinism(tmp_path):
    first = synthetic.generate_dataset(tmp_path / "a", n=6, seed=3, imgsz=96, groups=3)
    synthetic.generate_dataset(tmp_path / "b", n=6, seed=3, imgsz=96, groups=3)
    images = sorted((tmp_path / "a" / "images").rglob("*.jpg"))
    assert [p.parent.name for p in images] == ["g00", "g00", "g01", "g01", "g02", "g02"]
    assert first.images == 6 and first.groups == 3 and first.boxes == sum(first.per_class.values())
    total = 0
    for image in images:
        rel = image.relative_to(tmp_path / "a" / "images")
        label = (tmp_path / "a" / "labels" / rel).with_suffix(".txt")
        assert label.read_bytes() == (tmp_path / "b" / "labels" / rel).with_suffix(".txt").read_bytes()
        assert image.read_bytes() == (tmp_path / "b" / "images" / rel).read_bytes()
        det = yolo.from_lines(label.read_text().splitlines(), 96, 96)
        assert ((det.xyxy >= -1e-3) & (det.xyxy <= 96 + 1e-3)).all()
        assert set(det.class_id.tolist()) <= {0, 1, 2, 3}
        total += len(det)
    assert total == first.boxes
    import yaml

    data = yaml.safe_load((tmp_path / "a" / "data.yaml").read_text())
    assert data["names"] == {0: "bolt", 1: "nut", 2: "washer", 3: "screw"}


def test_class_names_match_the_fastener_ontology():
    from pathlib import Path

    from autolabel.ontology import Ontology

    ontology = Ontology.load(Path(__file__).parents[1] / "prompts" / "fasteners.yaml")
    assert tuple(ontology.names) == synthetic.CLASS_NAMES


def test_synth_command(tmp_path):
    result = CliRunner().invoke(
        app, ["synth", "--out", str(tmp_path / "d"), "--n", "4", "--imgsz", "64", "--groups", "2"]
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "d" / "images").rglob("*.jpg"))) == 4
    assert "4 images" in result.output


@pytest.mark.parametrize("imgsz", [(24, 40), (200, 90)])
def test_empty_scenes_and_odd_sizes(imgsz):
    rgb, det = synthetic.generate_scene(np.random.default_rng(0), imgsz, n_objects=(0, 1), with_masks=True)
    assert rgb.shape == (imgsz[1], imgsz[0], 3) and len(det) == 0
    assert det.xyxy.shape == (0, 4) and det.mask.shape == (0, imgsz[1], imgsz[0])
