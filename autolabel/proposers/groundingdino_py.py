"""``groundingdino-py``: the original Grounding DINO package (groundingdino-py 0.4.0).

Installed by ``scripts/setup.sh`` with ``pip install --no-deps groundingdino-py==0.4.0`` plus its
real runtime needs (``timm``, ``addict``, ``yapf``; the ``groundingdino`` extra): its declared
pins (``supervision==0.6.0``, ...) do not fit this environment, and it has no C++/CUDA extension
to build (its deformable attention is the pure-PyTorch one). It runs next to transformers 5
through ``groundingdino_compat``, which gives the package's BERT wrapper the mask helpers and
the encoder call transformers 5 changed, just before the model is built. The ``grounding-dino``
backend runs the same model through transformers and is the default.

The package's ``predict`` returns normalized cxcywh boxes, one max logit per box and the phrase
its tokens spelled; ``phrase_to_class`` maps that phrase back to an ontology class through the
ontology's prompts. Boxes are normalized over the resized image, which is the original scaled,
so they map back to original pixels with the original (width, height).

Image size: the shorter side is resized to 800 px unless the longer would pass 1333 px (the
package's own policy); ``proposer.max_side`` caps the longer side (shorter side at most 800).

Weights: ``--model-path`` is a ``.pth`` checkpoint (``{"model": state_dict}``, the package's
format) or a folder holding one; the model config is a ``*.py`` next to it, else the package's
``GroundingDINO_SwinT_OGC.py``. The config's ``text_encoder_type`` is ``bert-base-uncased`` (from
the Hugging Face cache or hub) or a BERT ``save_pretrained`` folder, absolute or relative to the
config. Without ``--model-path`` the checkpoint comes from the hub (``ShilongLiu/GroundingDINO``)
or its local cache. A checkpoint that leaves model weights unset is an error, not random weights.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import AutolabelError, first_line
from autolabel.ontology import normalize_prompt
from autolabel.proposers.base import FinalizeOptions, StagedProposer, finalize

if TYPE_CHECKING:
    import supervision as sv

    from autolabel.ontology import Ontology
    from autolabel.proposers.base import ProposerSettings

HUB_REPO = "ShilongLiu/GroundingDINO"
HUB_CHECKPOINT = "groundingdino_swint_ogc.pth"
PACKAGE_CONFIG = "GroundingDINO_SwinT_OGC.py"
INPUT_SIZE, INPUT_MAX_SIZE = 800, 1333
INSTALL_HINT = (
    "the original Grounding DINO package is optional: bash scripts/setup.sh installs it, or "
    "pip install timm addict yapf && pip install --no-deps groundingdino-py==0.4.0 "
    "(--no-deps: its declared pins such as supervision==0.6.0 do not fit); or use --model grounding-dino"
)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawPhrases:
    """One image's output of ``groundingdino.util.inference.predict``, as numpy."""

    boxes_cxcywh: np.ndarray  # (n, 4) normalized to [0, 1]
    scores: np.ndarray  # (n,)
    phrases: tuple[str, ...]


def import_groundingdino():
    """The package's inference module, or one line saying why it cannot be used here."""
    try:
        from groundingdino.util import inference
    except ImportError as exc:
        raise AutolabelError(f"groundingdino-py is not importable ({exc}): {INSTALL_HINT}") from None
    return inference


def caption_for(prompts: Sequence[str]) -> str:
    """'bolt . hex nut .': the package's separator; lower case as its tokenizer expects."""
    return " . ".join(normalize_prompt(p) for p in prompts) + " ."


def phrase_to_class(phrase: str, prompt_table: Sequence[tuple[str, int]]) -> int | None:
    """The class a detected phrase names, or None when it names none or is ambiguous.

    1. the phrase is a prompt; 2. the phrase contains prompts (tokens of neighbouring prompts
    merged into one phrase): the longest contained prompt decides; 3. the phrase is a part of
    prompts (a prompt's tokens only partly above the text threshold): only if all those
    prompts belong to one class.
    """
    words = normalize_prompt(phrase).split()
    if not words:
        return None
    prompts = [(normalize_prompt(p).split(), c) for p, c in prompt_table]
    for prompt_words, class_index in prompts:
        if prompt_words == words:
            return class_index
    contained = [(len(pw), c) for pw, c in prompts if _is_sublist(pw, words)]
    if contained:
        longest = max(n for n, _ in contained)
        classes = {c for n, c in contained if n == longest}
        return classes.pop() if len(classes) == 1 else None
    containing = {c for pw, c in prompts if _is_sublist(words, pw)}
    return containing.pop() if len(containing) == 1 else None


def _is_sublist(part: list[str], whole: list[str]) -> bool:
    n = len(part)
    return any(whole[i : i + n] == part for i in range(len(whole) - n + 1))


def raw_to_detections(
    raw: RawPhrases,
    prompt_table: Sequence[tuple[str, int]],
    options: FinalizeOptions,
    *,
    width: int,
    height: int,
) -> sv.Detections:
    """Pure: normalized cxcywh -> pixel xyxy, phrase -> class (unmapped phrases dropped), common tail."""
    from autolabel import detections as dets

    classes = [phrase_to_class(p, prompt_table) for p in raw.phrases]
    keep = [i for i, c in enumerate(classes) if c is not None]
    if not keep:
        return dets.empty()
    scale = np.asarray([[width], [height], [width], [height]], dtype=np.float64)
    cx, cy, w, h = np.asarray(raw.boxes_cxcywh, dtype=np.float64)[keep].T * scale
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    det = dets.make(xyxy, [classes[i] for i in keep], np.asarray(raw.scores)[keep])
    return finalize(det, options, width=width, height=height)


def resolve_weights(model_path: str | None, package_dir: Path) -> tuple[Path, Path]:
    """(config .py, checkpoint .pth) from --model-path, or the hub / its cache."""
    packaged_config = package_dir / "config" / PACKAGE_CONFIG
    if model_path is None:
        from huggingface_hub import hf_hub_download

        try:
            checkpoint = Path(hf_hub_download(HUB_REPO, HUB_CHECKPOINT))
        except Exception as exc:  # offline miss, no network, gated: all the same to the user  # noqa: BLE001
            raise AutolabelError(
                f"groundingdino-py weights {HUB_REPO}/{HUB_CHECKPOINT} are not available "
                f"({type(exc).__name__}): download them once online or pass "
                f"--model-path /path/to/{HUB_CHECKPOINT}"
            ) from None
        return packaged_config, checkpoint
    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    checkpoints = sorted(folder.glob("*.pth")) if path.is_dir() else ([path] if path.is_file() else [])
    if not checkpoints:
        raise AutolabelError(f"--model-path {model_path}: no .pth checkpoint found")
    configs = sorted(folder.glob("*.py"))
    return (configs[0] if configs else packaged_config), checkpoints[0]


def load_model(config: Path, checkpoint: Path, device: str):
    """The package's ``load_model`` (SLConfig -> ``build_model`` -> the checkpoint's ``model``), on
    transformers 5, with the text encoder found beside the config and every weight checked."""
    import argparse

    import torch
    from groundingdino.models import build_model
    from groundingdino.util.misc import clean_state_dict
    from groundingdino.util.slconfig import SLConfig

    from autolabel.proposers.groundingdino_compat import patch_bert_warper

    args = SLConfig.fromfile(str(config))
    args.device = device
    text_encoder = config.parent / str(args.text_encoder_type)
    if text_encoder.is_dir():
        args.text_encoder_type = str(text_encoder)
    patch_bert_warper()
    printed = io.StringIO()  # the package prints its text encoder's name to stdout
    try:
        with contextlib.redirect_stdout(printed):
            model = build_model(args)
    except OSError as exc:  # from_pretrained: not cached offline, no network, no such folder
        raise AutolabelError(
            f"groundingdino-py text encoder '{args.text_encoder_type}' is not available "
            f"({type(exc).__name__}): download it once online, or set text_encoder_type in "
            f"{config.name} to a local BERT folder"
        ) from None
    log.debug("groundingdino build_model: %s", printed.getvalue().strip())
    try:  # DETR-style training scripts save their argparse settings ("args") beside the weights
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, other pickled objects: one line  # noqa: BLE001
        raise AutolabelError(
            f"{checkpoint}: not a loadable groundingdino checkpoint ({first_line(exc)})"
        ) from None
    weights = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise AutolabelError(f"{checkpoint}: no state dict under 'model'")
    missing = model.load_state_dict(clean_state_dict(weights), strict=False).missing_keys
    if missing:
        raise AutolabelError(
            f"{checkpoint} does not fit {config.name}: {len(missing)} model weights missing "
            f"(e.g. {', '.join(missing[:3])})"
        )
    return model.eval()


class GroundingDinoPyProposer(StagedProposer):
    def __init__(self, settings: ProposerSettings, ontology: Ontology):
        inference = import_groundingdino()
        import groundingdino

        from autolabel.runtime import resolve_device

        self.inference = inference
        self.settings = settings
        self.prompt_table = ontology.prompt_table()
        self.caption = caption_for([p for p, _ in self.prompt_table])
        self.finalize_options = FinalizeOptions.from_settings(settings, ontology)
        self.device = resolve_device(settings.device)
        config, checkpoint = resolve_weights(settings.model_path, Path(groundingdino.__file__).parent)
        self.model = load_model(config, checkpoint, self.device).to(self.device)
        self.model_version = f"groundingdino-py:{checkpoint.name}"

    def preprocess(self, images: Sequence[np.ndarray]):
        import groundingdino.datasets.transforms as T
        from PIL import Image

        max_side = self.settings.max_side
        shorter, longer = (min(INPUT_SIZE, max_side), max_side) if max_side else (INPUT_SIZE, INPUT_MAX_SIZE)
        transform = T.Compose(
            [
                T.RandomResize([shorter], max_size=longer),
                T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )
        return [transform(Image.fromarray(image), None)[0] for image in images]

    def forward(self, inputs) -> list[RawPhrases]:
        out = []
        for tensor in inputs:  # the package's predict takes one image at a time
            boxes, logits, phrases = _call_with_device(
                self.inference.predict,
                self.device,
                model=self.model,
                image=tensor,
                caption=self.caption,
                box_threshold=float(min(self.finalize_options.thresholds)),
                text_threshold=self.settings.text_threshold,
            )
            out.append(
                RawPhrases(
                    boxes_cxcywh=boxes.detach().cpu().numpy(),
                    scores=logits.detach().cpu().numpy(),
                    phrases=tuple(phrases),
                )
            )
        return out

    def postprocess_one(self, output: RawPhrases, *, width: int, height: int) -> sv.Detections:
        return raw_to_detections(output, self.prompt_table, self.finalize_options, width=width, height=height)


def _call_with_device(function, device: str, *args, **kwargs):
    # Older releases hard-code CUDA and take no ``device``; newer ones default it to "cuda".
    if "device" in inspect.signature(function).parameters:
        kwargs["device"] = device
    return function(*args, **kwargs)
