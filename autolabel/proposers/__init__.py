"""Open-vocabulary proposers behind one small protocol (see ``base.py``)."""

from __future__ import annotations

import sys
from importlib import import_module
from typing import TYPE_CHECKING

from autolabel.errors import AutolabelError

if TYPE_CHECKING:
    from autolabel.ontology import Ontology
    from autolabel.proposers.base import Proposer, ProposerSettings

# name -> "module:Class"; modules are imported only when that backend is used.
BACKENDS: dict[str, str] = {
    "grounding-dino": "autolabel.proposers.grounding_dino:GroundingDinoProposer",
    "owlv2": "autolabel.proposers.owlv2:Owlv2Proposer",
    "yolo-world": "autolabel.proposers.yolo_world:YoloWorldProposer",
    "groundingdino-py": "autolabel.proposers.groundingdino_py:GroundingDinoPyProposer",
}
# runtime -> the backends that have it (every backend runs "torch"; "auto" means torch for the others)
RUNTIMES: dict[str, tuple[str, ...]] = {
    "auto": tuple(BACKENDS),
    "torch": tuple(BACKENDS),
    "onnx": ("owlv2", "grounding-dino"),
    "openvino": ("owlv2", "grounding-dino"),
}


def build_proposer(settings: ProposerSettings, ontology: Ontology) -> Proposer:
    if settings.model not in BACKENDS:
        raise AutolabelError(f"unknown model '{settings.model}': choose one of {', '.join(BACKENDS)}")
    if settings.runtime not in RUNTIMES:
        raise AutolabelError(f"unknown runtime '{settings.runtime}': choose one of {', '.join(RUNTIMES)}")
    if settings.model not in RUNTIMES[settings.runtime]:
        print(
            f"{settings.model}: runtime {settings.runtime} is not available for it; running torch",
            file=sys.stderr,
        )
        settings = settings.model_copy(update={"runtime": "torch"})
    module_name, _, class_name = BACKENDS[settings.model].partition(":")
    cls = getattr(import_module(module_name), class_name)
    return cls(settings, ontology)
