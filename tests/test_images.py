import numpy as np
import pytest

from autolabel.images import ImageDecodeError, decode, regex_group, time_gap_groups
from tests.builders import bad_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    return root, bad_corpus(root)


@pytest.mark.parametrize(
    "name, shape, note",
    [
        ("good.jpg", (64, 96, 3), None),
        ("cmyk.jpg", (30, 40, 3), "CMYK"),
        ("gray16.png", (30, 40, 3), "16-bit"),
        ("gray8.png", (30, 40, 3), "grayscale"),
        ("rotated.jpg", (60, 20, 3), "EXIF orientation 6"),
    ],
)
def test_decodable_files_become_rgb_uint8(corpus, name, shape, note):
    root, _ = corpus
    image = decode(root / name)
    assert image.pixels.shape == shape
    assert image.pixels.dtype == np.uint8
    assert (image.note is None) if note is None else (note in image.note)


def test_sixteen_bit_is_scaled_not_clipped(corpus):
    root, _ = corpus
    pixels = decode(root / "gray16.png").pixels
    assert pixels.min() == 0 and pixels.max() == 255
    assert len(np.unique(pixels)) > 200  # a clip to 255 would leave almost one value


@pytest.mark.parametrize(
    "name, reason",
    [
        ("zero.png", "empty file"),
        ("notes.jpg", "not an image"),
        ("truncated.jpg", "truncated"),
        ("bomb.png", "decompression bomb"),
        ("missing.jpg", "file not found"),
    ],
)
def test_bad_files_raise_with_a_reason(corpus, name, reason):
    root, _ = corpus
    with pytest.raises(ImageDecodeError, match=reason):
        decode(root / name)


@pytest.mark.parametrize(
    "path, pattern, group",
    [
        ("clips/cam1_000123.jpg", r"(cam\d+)_\d+", "cam1"),
        ("clips/cam2_000001.jpg", r"(cam\d+)_\d+", "cam2"),
        ("other/x.jpg", r"(cam\d+)_\d+", "other/x.jpg"),
        ("v/frame_0001.png", r"^(v)/", "v"),
    ],
)
def test_regex_groups(path, pattern, group):
    import re

    assert regex_group(path, re.compile(pattern)) == group


def test_time_gap_groups_split_sessions_per_folder():
    items = [
        ("a/1.jpg", "2024-01-01T10:00:00"),
        ("a/2.jpg", "2024-01-01T10:00:30"),
        ("a/3.jpg", "2024-01-01T11:00:00"),
        ("b/1.jpg", "2024-01-01T10:00:10"),
        ("c/none.jpg", None),
    ]
    groups = time_gap_groups(items, gap_seconds=60)
    assert groups["a/1.jpg"] == groups["a/2.jpg"] != groups["a/3.jpg"]
    assert groups["b/1.jpg"] not in {groups["a/1.jpg"], groups["a/3.jpg"]}
    assert groups["c/none.jpg"] == "c/none.jpg"
