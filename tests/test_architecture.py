"""The layers contract (scripts/check_layers.py, ARCHITECTURE.md) and the public surface."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_layers", REPO / "scripts" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_the_package_keeps_its_layers():
    assert _checker().violations(REPO / "autolabel") == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "autolabel"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # a cycle hidden in a function-level import is still a cycle
        (
            {
                "train.py": "from autolabel import evaluate\n",
                "evaluate.py": "def f():\n    import autolabel.train\n",
            },
            ["import cycle: autolabel.evaluate <-> autolabel.train"],
        ),
        # the store (state) may not reach up into a stage
        (
            {"store.py": "from autolabel.train import fit\n", "train.py": "def fit(): ...\n"},
            [
                "autolabel/store.py:1: autolabel.store (state) imports autolabel.train (stages), a higher layer"
            ],
        ),
        # relative imports resolve like absolute ones
        (
            {"formats/__init__.py": "", "formats/yolo.py": "from ..cli import app\n", "cli.py": "app = 1\n"},
            [
                (
                    "autolabel/formats/yolo.py:1: autolabel.formats.yolo (formats and settings) imports "
                    "autolabel.cli (cli), a higher layer"
                )
            ],
        ),
        ({"big.py": "x = 1\n" * 501}, ["autolabel/big.py: 501 lines (at most 500)"]),
        # downward imports are what the layers are for
        (
            {
                "cli.py": "from autolabel import loop\n",
                "loop.py": "from autolabel.store import Store\n",
                "store.py": "",
            },
            [],
        ),
    ],
)
def test_the_checker_finds_cycles_upward_imports_and_long_modules(tmp_path, files, expected):
    assert _checker().violations(_package(tmp_path, files)) == expected


# Modules other code builds on (a new proposer, student, strategy or format): their __all__ is
# their public surface, and it names exactly the public things they define (httpx's rule).
PUBLIC_MODULES = [
    "autolabel.detections",
    "autolabel.errors",
    "autolabel.ontology",
    "autolabel.formats.coco",
    "autolabel.formats.labelstudio",
    "autolabel.formats.yolo",
    "autolabel.proposers.base",
    "autolabel.students.base",
    "autolabel.sampling.uncertainty",
    "autolabel.sampling.select",
]


def _defined_public_names(module) -> set[str]:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_public_surface_is_what_all_says(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert sorted(exported) == sorted(set(exported)), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what it does not define: {missing}"
    assert set(exported) == _defined_public_names(module), f"{name}: __all__ differs from its public names"


def test_each_loop_stage_lives_in_a_file_named_after_it():
    stages = {
        "propose": "autolabel/proposers",
        "push": "autolabel/studio/push.py",
        "pull": "autolabel/studio/pull.py",
        "train": "autolabel/train.py",
        "evaluate": "autolabel/evaluate.py",
        "select": "autolabel/sampling/select.py",
        "loop": "autolabel/loop.py",
        "export": "autolabel/export",
    }
    missing = [
        f"{stage}: {path}"
        for stage, path in stages.items()
        if not ((REPO / path).exists() or (REPO / f"{path}.py").exists())
    ]
    assert missing == []
