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
}
DEFAULT_BACKEND = "yolo"


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


def load(weights: str | Path, *, backend: str = DEFAULT_BACKEND) -> Student:
    """A trained student (weights, an exported file or folder, or a model config) for inference."""
    return backend_class(backend).load(weights)


__all__: Sequence[str] = ("BACKENDS", "backend_class", "choose", "load", "start")
