import io
import itertools

import numpy as np
import pytest
from PIL import Image

from autolabel import embeddings
from autolabel.images import file_sha256
from autolabel.store import Store
from autolabel.synthetic import generate_scene, sample_style


def _jpeg(rgb, size=None, quality=70):
    image = Image.fromarray(rgb)
    if size:
        image = image.resize(size, Image.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.mark.parametrize(
    "variant",
    [
        lambda rgb: _jpeg(rgb, quality=40),
        lambda rgb: _jpeg(rgb, size=(64, 64)),
        lambda rgb: _jpeg(rgb, size=(300, 300), quality=90),
        lambda rgb: np.clip(rgb.astype(int) * 1.25 + 12, 0, 255).astype(np.uint8),  # exposure
        lambda rgb: rgb[2:-2, 2:-2],  # a slightly tighter crop
    ],
)
def test_copies_are_near_duplicates(variant):
    for seed in range(4):
        rgb, _ = generate_scene(np.random.default_rng(seed), 160)
        a, b = embeddings.embed_pixels(rgb), embeddings.embed_pixels(variant(rgb))
        assert float(a @ b) >= embeddings.NEAR_DUP_THRESHOLD


def test_scenes_of_different_sessions_are_not():
    vectors = []
    for g in range(8):
        style = sample_style(np.random.default_rng(g))
        rgb, _ = generate_scene(np.random.default_rng(50 + g), 128, style=style)
        vectors.append(embeddings.embed_pixels(rgb))
    worst = max(float(a @ b) for a, b in itertools.combinations(vectors, 2))
    assert worst < embeddings.NEAR_DUP_THRESHOLD


def test_unit_norm_and_flat_image():
    rgb, _ = generate_scene(np.random.default_rng(0), 96)
    vector = embeddings.embed_pixels(rgb)
    assert vector.shape == (63,) and vector.dtype == np.float32
    assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    assert not embeddings.embed_pixels(np.full((40, 40, 3), 128, np.uint8)).any()


def test_near_duplicate_pairs_is_an_exact_range_search():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 63)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    vectors = {10 + i: v for i, v in enumerate(base)}
    twin = base[2] + 0.05 * base[4]
    vectors[99] = (twin / np.linalg.norm(twin)).astype(np.float32)
    vectors[100] = np.zeros(63, np.float32)  # flat image: never a duplicate
    brute = sorted(
        (a, b)
        for a, b in itertools.combinations(sorted(vectors), 2)
        if vectors[a].any() and vectors[b].any() and float(vectors[a] @ vectors[b]) >= 0.95
    )
    found = embeddings.near_duplicate_pairs(vectors, 0.95)
    assert [(a, b) for a, b, _ in found] == brute == [(12, 99)]


def test_embeddings_are_cached_and_recomputed_when_the_file_changes(tmp_path):
    store = Store.open(tmp_path / "s.db")
    rgb, _ = generate_scene(np.random.default_rng(1), 64)
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    store.add_images(
        [
            {
                "path": "a.png",
                "sha256": file_sha256(path),
                "size_bytes": 1,
                "width": 64,
                "height": 64,
                "source_group": "g",
            }
        ]
    )
    (image,) = store.images()
    first = embeddings.ensure_embeddings(store, tmp_path, [image])
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)  # same row, new content, cache still valid
    assert np.array_equal(embeddings.ensure_embeddings(store, tmp_path, [image])[image.id], first[image.id])
    store.conn.execute("UPDATE images SET sha256 = 'changed' WHERE id = ?", (image.id,))
    (changed,) = store.images()
    recomputed = embeddings.ensure_embeddings(store, tmp_path, [changed])[image.id]
    assert not recomputed.any()  # the black image has no structure
    assert store.conn.execute("SELECT COUNT(*) FROM image_embeddings").fetchone()[0] == 1
