"""Tiny Grounding DINO and OWLv2 models with random weights, built from configs and local vocabularies.

Each builder writes a ``save_pretrained`` folder (processor + model) that loads through the same
``--model-path`` code users run, so tests exercise the real loading, preprocessing and forward
passes without downloading anything. The models are small enough for a forward pass on a
64-128 px image to take a fraction of a second on CPU.
"""

from __future__ import annotations

from pathlib import Path

# Words the fastener ontologies in the tests use; anything else tokenizes to [UNK].
WORDS = [
    "bolt",
    "nut",
    "hex",
    "washer",
    "screw",
    "machine",
    "lock",
    "flat",
    "metal",
    "ring",
    "wood",
    "threaded",
    "phillips",
    "head",
    "cap",
    "spring",
    "wing",
    "carriage",
    "socket",
    "set",
    "a",
    "the",
    "of",
    "with",
]

# Grounding DINO splits the caption into phrases at these BERT ids ([CLS], [SEP], '.', '?'), so the
# tiny vocabulary puts its special tokens exactly there.
_BERT_IDS = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012, "?": 1029}


def bert_vocab() -> list[str]:
    vocab = [f"[unused{i}]" for i in range(1030)]
    for token, index in _BERT_IDS.items():
        vocab[index] = token
    for offset, word in enumerate(WORDS + [","]):
        vocab[200 + offset] = word
    return vocab


def build_tiny_grounding_dino(directory: str | Path, *, max_text_len: int = 256, seed: int = 0) -> Path:
    """A two-decoder-layer Grounding DINO with a 4-stage Swin of width 8 and a 1-layer BERT of width 32."""
    import torch
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = bert_vocab()
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)

    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        mlp_ratio=1.0,
        out_features=["stage2", "stage3", "stage4"],
    )
    text = tiny_bert_config(len(vocab), max_position_embeddings=max(512, max_text_len))
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_n_points=2,
        decoder_n_points=2,
        num_feature_levels=4,
        num_queries=30,
        max_text_len=max_text_len,
    )
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 96, "longest_edge": 160})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def build_full_size_grounding_dino(directory: str | Path, *, seed: int = 0) -> Path:
    """grounding-dino-tiny's architecture (Swin-T, BERT-base, 900 queries, 800 px input) with random
    weights, for benchmarks: the same compute as the real checkpoint, ~690 MB on disk."""
    import torch
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.txt"
    vocab_file.write_text("\n".join(bert_vocab()) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()  # defaults = grounding-dino-tiny
    GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(), tokenizer=tokenizer
    ).save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def clip_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary in which every word in ``WORDS`` is one token (CLIP style)."""
    alphabet = byte_alphabet()
    tokens = list(alphabet) + [ch + "</w>" for ch in alphabet]
    merges: list[tuple[str, str]] = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            merged = pair[0] + pair[1]
            if pair not in merges:
                merges.append(pair)
            if merged not in tokens:
                tokens.append(merged)
            pieces = [merged] + pieces[2:]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def byte_alphabet() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: one printable character for each of the 256 byte values."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = [], 0
    for byte in range(256):
        if byte in printable:
            codes.append(byte)
        else:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def build_tiny_owlv2(directory: str | Path, *, seed: int = 0) -> Path:
    """An OWLv2 with a 1-layer ViT (64 px input, 8 px patches: 64 boxes) and a 1-layer text encoder."""
    import torch
    from transformers import (
        CLIPTokenizerFast,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocab_and_merges()
    tokenizer = CLIPTokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="!",
        model_max_length=16,
    )
    config = Owlv2Config(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 64,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():  # the default init saturates the heads: every score 0 or 1, boxes degenerate
        for head in (model.class_head, model.box_head):
            for name, param in head.named_parameters():
                if name.endswith("weight"):
                    param.normal_(0.0, 0.05)
    image_processor = Owlv2ImageProcessor(size={"height": 64, "width": 64})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    model.save_pretrained(directory)
    return directory


def write_tiny_dfine_config(path: str | Path, *, num_labels: int = 3) -> Path:
    """A D-FINE config small enough to train for an epoch in seconds (random init; ~110k parameters):
    a 4-stage HGNetV2 with 1-layer blocks, 2 feature levels, 32-d hidden size, 2 decoder layers."""
    from transformers import DFineConfig, HGNetV2Config

    backbone = HGNetV2Config(
        stem_channels=[3, 8, 8], stage_in_channels=[8, 16, 32, 64], stage_mid_channels=[8, 8, 16, 16],
        stage_out_channels=[16, 32, 64, 128], stage_num_blocks=[1, 1, 1, 1],
        stage_downsample=[False, True, True, True], stage_light_block=[False, False, True, True],
        stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[1, 1, 1, 1], out_indices=[3, 4],
        hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
    )  # fmt: skip
    config = DFineConfig(
        backbone_config=backbone, encoder_in_channels=[64, 128], feat_strides=[16, 32], encode_proj_layers=[1],
        encoder_hidden_dim=32, encoder_ffn_dim=64, encoder_attention_heads=2, d_model=32,
        decoder_in_channels=[32, 32], decoder_ffn_dim=64, decoder_layers=2, decoder_attention_heads=2,
        num_feature_levels=2, decoder_n_points=[2, 2], num_queries=16, num_denoising=10, depth_mult=0.34,
        hidden_expansion=0.5, lqe_hidden_dim=8, num_labels=num_labels,
    )  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config.to_json_file(str(path))
    return path


# groundingdino-py's config keys for a small model. The package cannot go smaller than Swin-T: its
# backbones are Swin-T/B/L at fixed widths or ResNet-50/101 with ImageNet weights downloaded at
# build time, and its text enhancer hard-codes 256-d position embeddings (hidden_dim 256).
TINY_GROUNDINGDINO_PY = {
    "enc_layers": 1,
    "dec_layers": 1,
    "dim_feedforward": 32,
    "num_queries": 20,
    "enc_n_points": 1,
    "dec_n_points": 1,
    "text_encoder_type": "bert",  # the folder beside the config
}


def build_tiny_groundingdino_py(directory: str | Path, *, seed: int = 0) -> Path:
    """A folder ``--model groundingdino-py --model-path`` loads: ``tiny_groundingdino.py`` (the
    package's Swin-T config with one encoder and one decoder layer, 20 queries), ``bert/`` (a 1-layer
    BERT of width 32 and the tiny vocabulary) and ``tiny_groundingdino.pth`` ({"model": state_dict},
    random weights, built by the package's own ``build_model``; ~125 MB, nearly all of it Swin-T)."""
    import re

    import groundingdino
    import torch
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig
    from transformers import BertModel, BertTokenizerFast

    from autolabel.proposers.groundingdino_compat import patch_bert_warper

    directory = Path(directory)
    bert = directory / "bert"
    bert.mkdir(parents=True, exist_ok=True)
    vocab = bert_vocab()
    (bert / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab=str(bert / "vocab.txt"), do_lower_case=True).save_pretrained(bert)
    torch.manual_seed(seed)
    BertModel(tiny_bert_config(len(vocab))).save_pretrained(bert)

    config_text = (Path(groundingdino.__file__).parent / "config" / "GroundingDINO_SwinT_OGC.py").read_text()
    for key, value in TINY_GROUNDINGDINO_PY.items():
        config_text, count = re.subn(rf"^{key} = .*$", f"{key} = {value!r}", config_text, flags=re.MULTILINE)
        assert count == 1, key
    config = directory / "tiny_groundingdino.py"
    config.write_text(config_text)

    patch_bert_warper()
    args = SLConfig.fromfile(str(config))
    args.device = "cpu"
    args.text_encoder_type = str(bert)
    model = build_model(args)
    torch.save({"model": model.state_dict()}, directory / "tiny_groundingdino.pth")
    return directory


def write_dfine_nano_config(path: str | Path, *, num_labels: int = 80) -> Path:
    """D-FINE-N's architecture (``ustc-community/dfine-nano-coco``: HGNetV2-B0, 2 feature levels at
    strides 16 and 32, 128-d, 3 decoder layers, 300 queries; ~3.8M parameters with 80 classes) as a
    config, for random-init benchmarks: the values of transformers' D-FINE conversion script
    (``convert_d_fine_original_pytorch_checkpoint_to_hf.py``, ``dfine_n_coco``)."""
    from transformers import DFineConfig, HGNetV2Config

    backbone = HGNetV2Config(
        layer_type="basic", embedding_size=32, hidden_sizes=[128, 256, 512, 1024], stem_channels=[3, 16, 16],
        stage_in_channels=[16, 64, 256, 512], stage_mid_channels=[16, 32, 64, 128],
        stage_out_channels=[64, 256, 512, 1024], stage_num_blocks=[1, 1, 2, 1],
        stage_downsample=[False, True, True, True], stage_light_block=[False, False, True, True],
        stage_kernel_size=[3, 3, 5, 5], stage_numb_of_layers=[3, 3, 3, 3], out_indices=[3, 4],
        use_learnable_affine_block=True,
    )  # fmt: skip
    config = DFineConfig(
        backbone_config=backbone, num_feature_levels=2, encoder_ffn_dim=512, encode_proj_layers=[1],
        d_model=128, encoder_hidden_dim=128, decoder_ffn_dim=512, encoder_in_channels=[512, 1024],
        decoder_n_points=[6, 6], decoder_in_channels=[128, 128], feat_strides=[16, 32], depth_mult=0.5,
        decoder_layers=3, hidden_expansion=0.34, num_labels=num_labels,
    )  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    config.to_json_file(str(path))
    return path


def tiny_bert_config(vocab_size: int, **extra):
    """The one-layer, 32-wide BERT both tiny Grounding DINOs use as their text encoder."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, **extra,
    )  # fmt: skip
