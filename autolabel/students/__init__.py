"""Trainable students behind one protocol (see ``base.py``); ultralytics YOLO is the first backend.

``choose`` decides what a training run starts from, ``start`` loads that for training, ``load``
loads trained weights (or an exported file) for prediction, scoring and export. The loop, the
sampler and export call these, never a detection library, so a second backend is one entry in
``BACKENDS`` and its module.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from autolabel.errors import AutolabelError

if TYPE_CHECKING:
    from autolabel.students.base import ModelChoice, Student

# name -> "module:Class"; modules are imported only when that backend is used.
BACKENDS: dict[str, str] = {
    "yolo": "autolabel.students.yolo:YoloStudent",
    "dfine": "autolabel.students.dfine:DFineStudent",
}
DEFAULT_BACKEND = "yolo"

# ``train.student`` / ``--student``: name -> (backend, the model it starts from when ``train.model``
# is left at a YOLO weights name). D-FINE code and weights are Apache-2.0; ultralytics is AGPL-3.0.
STUDENTS: dict[str, tuple[str, str | None]] = {
    "yolo": ("yolo", None),
    "dfine-n": ("dfine", "ustc-community/dfine-nano-coco"),
    "dfine-s": ("dfine", "ustc-community/dfine-small-coco"),
}
DEFAULT_STUDENT = "yolo"


def for_student(student: str, model: str) -> tuple[str, str]:
    """(backend, model) for ``train.student``: a YOLO ``.pt`` name stands for "not set" with a
    student whose default is something else (the ``train.model`` default is ``yolo11n.pt``)."""
    if student not in STUDENTS:
        raise AutolabelError(f"unknown student '{student}': choose one of {', '.join(STUDENTS)}")
    backend, default_model = STUDENTS[student]
    if default_model is not None and model.endswith(".pt") and not Path(model).is_file():
        model = default_model
    return backend, model


def backend_of(weights: str | Path) -> str:
    """Which backend reads ``weights``: D-FINE's are a ``save_pretrained`` folder (or its
    ``model.safetensors``), a config ``.json``, or an ``.onnx`` whose metadata names the dfine
    student (read without a runtime session); everything else is ultralytics'."""
    path = Path(str(weights))
    if path.suffix in (".safetensors", ".json") or (path.is_dir() and (path / "config.json").is_file()):
        return "dfine"
    if path.suffix == ".onnx" and path.is_file():
        from autolabel.students.dfine_onnx import is_dfine_onnx

        try:
            return "dfine" if is_dfine_onnx(path) else "yolo"
        except AutolabelError:
            return "yolo"  # unreadable: ultralytics says why when it loads it
    return "yolo"


def backend_class(name: str = DEFAULT_BACKEND) -> type[Student]:
    if name not in BACKENDS:
        raise AutolabelError(f"unknown student backend '{name}': choose one of {', '.join(BACKENDS)}")
    module_name, _, class_name = BACKENDS[name].partition(":")
    return getattr(import_module(module_name), class_name)


def choose(
    model: str, *, resume_from: str | None = None, download: bool = True, backend: str = DEFAULT_BACKEND
) -> ModelChoice:
    """What a run trains from: ``resume_from`` (a previous student's weights) or ``model``."""
    return backend_class(backend).choose(model, resume_from=resume_from, download=download)


def start(choice: ModelChoice, *, backend: str = DEFAULT_BACKEND) -> Student:
    """The student a training run fits, loaded from ``choice``."""
    return backend_class(backend).start(choice)


def load(weights: str | Path, *, backend: str | None = None) -> Student:
    """A trained student (weights, an exported file or folder, or a model config) for inference;
    the backend follows from the weights unless given."""
    return backend_class(backend or backend_of(weights)).load(weights)


__all__: Sequence[str] = (
    "BACKENDS", "STUDENTS", "backend_class", "backend_of", "choose", "for_student", "load", "start",
)  # fmt: skip
