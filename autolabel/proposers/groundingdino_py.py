"""``groundingdino-py``: the original Grounding DINO package (``pip install groundingdino-py``).

Optional, and not installable next to transformers 5: groundingdino-py 0.4.0 builds its text
encoder with ``BertModel.get_extended_attention_mask``, which transformers 5 removed, so it needs
transformers 4.x in its own environment. The ``grounding-dino`` backend runs the same model
through transformers and is the default.

The package's ``predict`` returns normalized cxcywh boxes, one max logit per box and the phrase
its tokens spelled; ``phrase_to_class`` maps that phrase back to an ontology class through the
ontology's prompts.

Weights: ``--model-path`` is a ``.pth`` checkpoint or a folder holding one; the model config is a
``*.py`` next to it, else the package's ``GroundingDINO_SwinT_OGC.py``. Without ``--model-path``
the checkpoint comes from the Hugging Face hub (``ShilongLiu/GroundingDINO``) or its local cache.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import AutolabelError
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
    "the original Grounding DINO package is optional: install it in its own environment with "
    "transformers 4.x (pip install groundingdino-py 'transformers<5'); groundingdino-py 0.4.0 fails "
    "with transformers 5 (BertModel has no get_extended_attention_mask). Or use --model grounding-dino"
)


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
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        raise AutolabelError(
            f"groundingdino-py found, but transformers is {transformers.__version__}: {INSTALL_HINT}"
        )
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
        self.model = _call_with_device(inference.load_model, self.device, str(config), str(checkpoint))
        self.model.to(self.device)
        self.model_version = f"groundingdino-py:{checkpoint.name}"

    def preprocess(self, images: Sequence[np.ndarray]):
        import groundingdino.datasets.transforms as T
        from PIL import Image

        transform = T.Compose(
            [
                T.RandomResize([self.settings.max_side or INPUT_SIZE], max_size=INPUT_MAX_SIZE),
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
