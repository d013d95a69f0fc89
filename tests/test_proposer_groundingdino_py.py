"""groundingdino-py backend: the pure phrase -> class and box conversion, the transformers 5
compatibility layer against the transformers 4.x formulas, and the real package end to end through
`autolabel propose` with a tiny config and random weights (tests/tiny_models.py)."""

from __future__ import annotations

import json
import sqlite3
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from autolabel.cli.app import app
from autolabel.errors import AutolabelError
from autolabel.ontology import Ontology, OntologyClass
from autolabel.proposers import build_proposer
from autolabel.proposers.base import FinalizeOptions, ProposerSettings
from autolabel.proposers.groundingdino_py import RawPhrases, caption_for, phrase_to_class, raw_to_detections
from tests.builders import rgb

ONTOLOGY = Ontology(
    classes=(
        OntologyClass("bolt", ("bolt", "hex bolt", "Machine Screw.")),
        OntologyClass("nut", ("hex nut", "nut"), box_threshold=0.5),
        OntologyClass("washer", ("flat washer",)),
        OntologyClass("screw", ("wood screw",)),
    )
)
TABLE = ONTOLOGY.prompt_table()


def test_caption_joins_normalized_prompts():
    assert caption_for([p for p, _ in TABLE]) == (
        "bolt . hex bolt . machine screw . hex nut . nut . flat washer . wood screw ."
    )


@pytest.mark.parametrize(
    "phrase, expected",
    [
        ("bolt", 0),
        ("hex bolt", 0),
        ("machine screw", 0),
        ("Machine  Screw", 0),
        ("hex nut", 1),
        ("nut", 1),
        ("flat washer", 2),
        ("wood screw", 3),
        # tokens of neighbouring prompts merged into one phrase: the longest contained prompt wins
        ("hex nut flat", 1),
        ("bolt hex bolt", 0),
        ("washer flat washer", 2),
        # a part of prompts: only when every prompt it is part of has the same class
        ("washer", 2),
        ("flat", 2),
        ("wood", 3),
        ("machine", 0),
        ("hex", None),  # hex bolt (bolt) or hex nut (nut)
        ("screw", None),  # machine screw (bolt) or wood screw (screw)
        # two different classes of equal length in one phrase: ambiguous
        ("bolt nut", None),
        ("", None),
        ("cat", None),
    ],
)
def test_phrase_to_class(phrase, expected):
    assert phrase_to_class(phrase, TABLE) == expected


def post(boxes, scores, phrases, *, default=0.3, max_det=100, size=(200, 100), nms_iou=None):
    raw = RawPhrases(
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(scores, dtype=np.float32),
        tuple(phrases),
    )
    options = FinalizeOptions(
        thresholds=tuple(ONTOLOGY.thresholds(default)), max_det=max_det, nms_iou=nms_iou
    )
    return raw_to_detections(raw, TABLE, options, width=size[0], height=size[1])


@pytest.mark.parametrize(
    "box, size, expected_xyxy",
    [
        ((0.5, 0.5, 0.2, 0.4), (200, 100), (80, 30, 120, 70)),
        ((0.5, 0.5, 1.0, 1.0), (640, 480), (0, 0, 640, 480)),
        ((0.05, 0.1, 0.2, 0.4), (200, 100), (0, 0, 30, 30)),  # clipped at the left/top edge
        ((0.25, 0.75, 0.1, 0.1), (37, 91), (7.4, 63.7, 11.1, 72.8)),
    ],
)
def test_normalized_cxcywh_to_pixel_xyxy(box, size, expected_xyxy):
    det = post([box], [0.9], ["bolt"], size=size)
    np.testing.assert_allclose(det.xyxy[0], expected_xyxy, atol=1e-3)


def test_classes_thresholds_and_dropped_phrases():
    det = post(
        [
            (0.2, 0.2, 0.1, 0.1),
            (0.4, 0.4, 0.1, 0.1),
            (0.6, 0.6, 0.1, 0.1),
            (0.8, 0.8, 0.1, 0.1),
            (0.5, 0.5, 0.1, 0.1),
        ],
        [0.9, 0.45, 0.55, 0.8, 0.7],
        ["hex bolt", "nut", "hex nut", "hex", "wood screw"],
    )
    # 'nut' at 0.45 is under its class threshold 0.5; 'hex' names no single class
    assert det.class_id.tolist() == [0, 1, 3]
    np.testing.assert_allclose(det.confidence, [0.9, 0.55, 0.7], atol=1e-6)
    assert len(post([], [], [])) == 0
    top = post([(0.2, 0.2, 0.1, 0.1), (0.6, 0.6, 0.1, 0.1)], [0.4, 0.9], ["bolt", "flat washer"], max_det=1)
    assert top.class_id.tolist() == [2]


def test_missing_package_is_one_line_error_with_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "groundingdino", None)  # as if not installed
    with pytest.raises(AutolabelError) as info:
        build_proposer(ProposerSettings(model="groundingdino-py", device="cpu"), ONTOLOGY)
    message = str(info.value)
    assert "\n" not in message
    assert "pip install --no-deps groundingdino-py==0.4.0" in message and "scripts/setup.sh" in message
    assert "--model grounding-dino" in message


@pytest.fixture(scope="module")
def tiny_groundingdino_py_dir(tmp_path_factory):
    from tests.tiny_models import build_tiny_groundingdino_py

    return build_tiny_groundingdino_py(tmp_path_factory.mktemp("tiny-groundingdino-py"))


# ---- the transformers 5 compatibility layer -------------------------------------------------------

M32 = -3.4028234663852886e38  # torch.finfo(torch.float32).min: 4.x's additive "masked" value
M16 = -65504.0  # torch.finfo(torch.float16).min


def test_extended_attention_mask_is_the_4x_formula():
    """4.x: 3-D (b, n, n) -> [:, None]; 2-D -> [:, None, None] (encoder) or causal * padding
    (decoder); then (1 - mask) * finfo(dtype).min in dtype."""
    import torch

    from autolabel.proposers.groundingdino_compat import extended_attention_mask

    padding = torch.tensor([[1, 1, 0]])
    out = extended_attention_mask(padding, (1, 3), dtype=torch.float32, is_decoder=False)
    assert out.shape == (1, 1, 1, 3) and out.dtype == torch.float32
    assert out.flatten().tolist() == [0.0, 0.0, M32]

    blocks = torch.tensor([[[True, True, False], [True, True, False], [False, False, True]]])
    out = extended_attention_mask(blocks, (1, 3), dtype=torch.float16, is_decoder=False)
    assert out.shape == (1, 1, 3, 3) and out.dtype == torch.float16
    assert out[0, 0].tolist() == [[0.0, 0.0, M16], [0.0, 0.0, M16], [M16, M16, 0.0]]

    causal = extended_attention_mask(torch.tensor([[1, 1, 0]]), (1, 3), dtype=torch.float32, is_decoder=True)
    assert causal.shape == (1, 1, 3, 3)
    assert causal[0, 0].tolist() == [[0.0, M32, M32], [0.0, 0.0, M32], [0.0, 0.0, M32]]
    # a cached prefix of 2 positions: the causal part gets a prefix of ones
    cached = extended_attention_mask(torch.ones(1, 3), (1, 1), dtype=torch.float32, is_decoder=True)
    assert cached.shape == (1, 1, 1, 3) and cached.flatten().tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="Wrong shape"):
        extended_attention_mask(torch.ones(1, 1, 1, 3), (1, 3), dtype=torch.float32, is_decoder=False)


def test_inverted_attention_mask_and_head_mask_are_the_4x_formulas():
    import torch

    from autolabel.proposers.groundingdino_compat import head_mask_per_layer, inverted_attention_mask

    out = inverted_attention_mask(torch.tensor([[0, 1], [1, 1]]), dtype=torch.float32)
    assert out.shape == (2, 1, 1, 2) and out.flatten().tolist() == [M32, 0.0, 0.0, 0.0]
    out = inverted_attention_mask(torch.tensor([[[1, 0], [0, 1]]]), dtype=torch.float32)
    assert out.shape == (1, 1, 2, 2) and out[0, 0].tolist() == [[0.0, M32], [M32, 0.0]]

    assert head_mask_per_layer(None, 3, dtype=torch.float32) == [None, None, None]
    per_head = head_mask_per_layer(torch.tensor([1, 0]), 3, dtype=torch.float16)
    assert per_head.shape == (3, 1, 2, 1, 1) and per_head.dtype == torch.float16
    assert per_head[:, 0, :, 0, 0].tolist() == [[1.0, 0.0]] * 3
    per_layer = head_mask_per_layer(torch.tensor([[1, 0], [0, 1]]), 2, dtype=torch.float32)
    assert per_layer.shape == (2, 1, 2, 1, 1)
    assert per_layer[:, 0, :, 0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    chunked = head_mask_per_layer(torch.tensor([1, 1]), 1, dtype=torch.float32, is_attention_chunked=True)
    assert chunked.shape == (1, 1, 2, 1, 1, 1)


def _tiny_bert(seed=0):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16
    )
    return BertModel(config).eval()


def test_patched_warper_runs_bert_like_transformers(monkeypatch):
    """The package's BertModelWarper, patched, gives what transformers 5's own BertModel gives: with a
    padding mask, and with the block-diagonal 3-D mask Grounding DINO builds (each block as if alone)."""
    import torch
    from groundingdino.models.GroundingDINO.bertwarper import BertModelWarper

    from autolabel.proposers.groundingdino_compat import patch_bert_warper

    patch_bert_warper()
    bert = _tiny_bert()
    warper = BertModelWarper(bert_model=bert)
    ids = torch.tensor([[1, 5, 7, 9, 2, 0]])
    padding = torch.tensor([[1, 1, 1, 1, 1, 0]])
    with torch.no_grad():
        ours = warper(input_ids=ids, attention_mask=padding)
        theirs = bert(input_ids=ids, attention_mask=padding)
        np.testing.assert_allclose(
            ours["last_hidden_state"][:, :5], theirs.last_hidden_state[:, :5], atol=1e-5
        )
        np.testing.assert_allclose(ours["pooler_output"], theirs.pooler_output, atol=1e-5)

        blocks = torch.zeros(1, 6, 6, dtype=torch.bool)
        blocks[0, :3, :3] = blocks[0, 3:, 3:] = True
        positions = torch.tensor([[0, 1, 2, 0, 1, 2]])
        split = warper(input_ids=ids, attention_mask=blocks, position_ids=positions)["last_hidden_state"]
        first = bert(input_ids=ids[:, :3], position_ids=positions[:, :3]).last_hidden_state
        second = bert(input_ids=ids[:, 3:], position_ids=positions[:, 3:]).last_hidden_state
        np.testing.assert_allclose(split, torch.cat([first, second], dim=1), atol=1e-5)
        assert isinstance(warper(input_ids=ids, return_dict=False), tuple)
        with pytest.raises(NotImplementedError, match="head_mask"):
            warper(input_ids=ids, head_mask=torch.tensor([1.0, 0.0]))


def test_patch_is_needed_applied_by_the_proposer_idempotent_and_a_no_op_where_the_package_works(
    monkeypatch, tiny_groundingdino_py_dir
):
    import transformers
    from groundingdino.models.GroundingDINO import bertwarper

    from autolabel.proposers import groundingdino_compat as compat

    warper = bertwarper.BertModelWarper
    compat.patch_bert_warper()
    originals = getattr(warper, compat._PATCHED)
    for name, method in originals.items():  # the package as it ships
        monkeypatch.setattr(warper, name, method)
    monkeypatch.delattr(warper, compat._PATCHED)
    assert int(transformers.__version__.split(".")[0]) >= 5, "this environment pins transformers 5"
    with pytest.raises(AttributeError, match="get_extended_attention_mask"):
        warper(bert_model=_tiny_bert())

    settings = ProposerSettings(
        model="groundingdino-py", model_path=str(tiny_groundingdino_py_dir), device="cpu"
    )
    build_proposer(settings, ONTOLOGY)  # patches just before the package builds its model
    assert getattr(warper, compat._PATCHED) == originals and warper.forward is not originals["forward"]
    patched = dict(vars(warper))
    assert compat.patch_bert_warper() is True and dict(vars(warper)) == patched
    warper(bert_model=_tiny_bert())

    # transformers 4.x (BertModel still has the helpers): nothing is touched
    for name, method in originals.items():
        monkeypatch.setattr(warper, name, method)
    monkeypatch.delattr(warper, compat._PATCHED)
    monkeypatch.setattr(transformers.BertModel, "get_extended_attention_mask", lambda *a: None, raising=False)
    assert compat.patch_bert_warper() is False
    assert warper.forward is originals["forward"] and not hasattr(warper, compat._PATCHED)


# ---- the real package end to end ------------------------------------------------------------------


SIZES = [(96, 64), (128, 80), (64, 112)]  # (width, height)
FASTENER_CLASSES = ["bolt", "nut", "washer", "screw"]


def test_propose_cli_stores_boxes_in_original_pixels(tmp_path, tiny_groundingdino_py_dir, torch_one_thread):
    runner = CliRunner()
    for i, (width, height) in enumerate(SIZES):
        rgb(tmp_path / "raw" / f"{i}.jpg", width=width, height=height, seed=i)
    assert runner.invoke(app, ["init", "--images", str(tmp_path / "raw"), "-w", str(tmp_path)]).exit_code == 0
    settings = tmp_path / "autolabel.yaml"
    settings.write_text(settings.read_text().replace("max_side: null", "max_side: 128"))
    args = [
        "propose",
        "-w",
        str(tmp_path),
        "--prompts",
        "prompts/fasteners.yaml",
        "--model",
        "groundingdino-py",
    ]
    args += [
        "--model-path",
        str(tiny_groundingdino_py_dir),
        "--box-threshold",
        "0.0",
        "--text-threshold",
        "0.5",
    ]
    args += ["--max-det", "5", "--device", "cpu", "--batch-size", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"proposed {len(SIZES)} images" in result.output and "Traceback" not in result.output
    assert "final text_encoder_type" not in result.output  # the package's print goes to the log

    conn = sqlite3.connect(tmp_path / ".autolabel" / "state.db")
    rows = conn.execute(
        "SELECT i.path, i.width, i.height, p.model_version, p.detections FROM predictions p"
        " JOIN images i ON i.id = p.image_id WHERE p.error IS NULL ORDER BY i.path"
    ).fetchall()
    assert [r[0] for r in conn.execute("SELECT name FROM classes ORDER BY id")] == FASTENER_CLASSES
    assert len(rows) == len(SIZES)

    # the same images through the proposer's forward, decoded here from the package's raw output
    ontology = Ontology.load("prompts/fasteners.yaml")
    proposer = build_proposer(
        ProposerSettings(
            model="groundingdino-py",
            model_path=str(tiny_groundingdino_py_dir),
            device="cpu",
            box_threshold=0.0,
            text_threshold=0.5,
            max_side=128,
        ),
        ontology,
    )
    thresholds = ontology.thresholds(0.0)
    table = ontology.prompt_table()
    mapped = 0
    for (path, width, height, version, det_json), (w, h) in zip(rows, SIZES):
        assert (width, height) == (w, h) and version == "groundingdino-py:tiny_groundingdino.pth"
        det = json.loads(det_json)
        assert 0 < len(det["xyxy"]) <= 5, path
        pixels = np.asarray(Image.open(tmp_path / "raw" / path).convert("RGB"))
        raw = proposer.forward(proposer.preprocess([pixels]))[0]
        expected = []
        for (cx, cy, bw, bh), score, phrase in zip(raw.boxes_cxcywh, raw.scores, raw.phrases):
            cls = phrase_to_class(phrase, table)
            if cls is None or score < thresholds[cls]:
                continue
            box = np.clip(
                [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], 0, None
            )
            expected.append((float(score), cls, np.minimum(box, [w, h, w, h])))
        expected = sorted(expected, key=lambda e: -e[0])[:5]
        mapped += len(expected)
        order = np.argsort(-np.asarray(det["confidence"]), kind="stable")
        np.testing.assert_allclose(np.asarray(det["confidence"])[order], [e[0] for e in expected], atol=1e-5)
        assert np.asarray(det["class_id"])[order].tolist() == [e[1] for e in expected]
        np.testing.assert_allclose(np.asarray(det["xyxy"])[order], [e[2] for e in expected], atol=1e-2)
    assert mapped >= len(SIZES)


def test_checkpoint_weights_are_the_ones_loaded(tiny_groundingdino_py_dir, tmp_path):
    import shutil

    import torch

    saved = torch.load(tiny_groundingdino_py_dir / "tiny_groundingdino.pth", weights_only=True)["model"]
    settings = ProposerSettings(
        model="groundingdino-py", model_path=str(tiny_groundingdino_py_dir), device="cpu"
    )
    proposer = build_proposer(settings, ONTOLOGY)
    loaded = proposer.model.state_dict()
    for key in ("bert.embeddings.word_embeddings.weight", "backbone.0.patch_embed.proj.weight"):
        assert torch.equal(loaded[key], saved[key]), key

    # a checkpoint that leaves weights unset is an error, not a model with random weights
    partial = tmp_path / "partial"
    shutil.copytree(tiny_groundingdino_py_dir, partial, ignore=shutil.ignore_patterns("*.pth"))
    torch.save({"model": {k: v for k, v in saved.items() if not k.startswith("bert.")}}, partial / "p.pth")
    with pytest.raises(AutolabelError, match="model weights missing") as info:
        build_proposer(settings.model_copy(update={"model_path": str(partial)}), ONTOLOGY)
    assert "\n" not in str(info.value)

    (partial / "p.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(AutolabelError, match="not a loadable groundingdino checkpoint"):
        build_proposer(settings.model_copy(update={"model_path": str(partial / "p.pth")}), ONTOLOGY)

    shutil.rmtree(partial / "bert")
    config = partial / "tiny_groundingdino.py"
    config.write_text(config.read_text().replace("'bert'", "'no-such-bert-here'"))
    with pytest.raises(AutolabelError, match="text encoder 'no-such-bert-here' is not available"):
        build_proposer(settings.model_copy(update={"model_path": str(partial)}), ONTOLOGY)
