"""The prompt ontology: which classes to find and which text prompts describe each.

A small frozen value loaded from ``prompts/*.yaml``::

    classes:
      - name: bolt
        prompts: [bolt, hex bolt, machine screw with hex head]
        box_threshold: 0.3      # optional, overrides the run's --box-threshold
      - name: nut
        prompts: [hex nut, nut]
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from autolabel.errors import AutolabelError, read_text

__all__ = [
    "Ontology",
    "OntologyClass",
    "normalize_prompt",
]


@dataclass(frozen=True)
class OntologyClass:
    name: str
    prompts: tuple[str, ...]
    box_threshold: float | None = None


@dataclass(frozen=True)
class Ontology:
    classes: tuple[OntologyClass, ...]

    def __post_init__(self) -> None:
        if not self.classes:
            raise AutolabelError("the ontology has no classes: give --prompt or a prompts/*.yaml file")
        names = [c.name for c in self.classes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise AutolabelError(f"duplicate class names in the ontology: {', '.join(dupes)}")
        for cls in self.classes:
            if not cls.name.strip():
                raise AutolabelError("a class in the ontology has an empty name")
            if not cls.prompts or any(not p.strip() for p in cls.prompts):
                raise AutolabelError(f"class '{cls.name}' has an empty prompt")
            if cls.box_threshold is not None and not 0.0 <= cls.box_threshold <= 1.0:
                raise AutolabelError(f"class '{cls.name}': box_threshold must be within [0, 1]")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def prompt_table(self) -> list[tuple[str, int]]:
        """Every (prompt, class index) pair, in ontology order; a prompt maps to exactly one class."""
        table: list[tuple[str, int]] = []
        seen: dict[str, int] = {}
        for class_index, cls in enumerate(self.classes):
            for prompt in cls.prompts:
                key = normalize_prompt(prompt)
                if key in seen and seen[key] != class_index:
                    raise AutolabelError(
                        f"prompt '{prompt}' is used by two classes: "
                        f"'{self.classes[seen[key]].name}' and '{cls.name}'"
                    )
                if key not in seen:
                    seen[key] = class_index
                    table.append((prompt.strip(), class_index))
        return table

    def thresholds(self, default: float) -> list[float]:
        return [default if c.box_threshold is None else c.box_threshold for c in self.classes]

    def fingerprint(self) -> str:
        """A short stable hash: a run with the same model and fingerprint can be skipped on resume."""
        payload = json.dumps(
            [[c.name, list(c.prompts), c.box_threshold] for c in self.classes], sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        out = []
        for c in self.classes:
            item: dict = {"name": c.name, "prompts": list(c.prompts)}
            if c.box_threshold is not None:
                item["box_threshold"] = c.box_threshold
            out.append(item)
        return {"classes": out}

    @classmethod
    def from_dict(cls, data: object, source: str = "ontology") -> Ontology:
        if not isinstance(data, dict) or not isinstance(data.get("classes"), list):
            raise AutolabelError(f"{source}: expected a mapping with a 'classes' list")
        classes = []
        for i, item in enumerate(data["classes"]):
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict) or "name" not in item:
                raise AutolabelError(f"{source}: class #{i + 1} needs a 'name'")
            unknown = set(item) - {"name", "prompts", "box_threshold"}
            if unknown:
                raise AutolabelError(f"{source}: class '{item['name']}' has unknown keys: {sorted(unknown)}")
            prompts = item.get("prompts", [item["name"]])
            if isinstance(prompts, str):
                prompts = [prompts]
            if not isinstance(prompts, list) or not prompts:
                raise AutolabelError(
                    f"{source}: class '{item['name']}' has no prompts: give a list of prompts or leave the key out"
                    " (the class name is then its prompt)"
                )
            threshold = item.get("box_threshold")
            classes.append(
                OntologyClass(
                    name=str(item["name"]).strip(),
                    prompts=tuple(str(p).strip() for p in prompts),
                    box_threshold=None if threshold is None else float(threshold),
                )
            )
        return cls(classes=tuple(classes))

    @classmethod
    def from_prompts(cls, prompts: list[str]) -> Ontology:
        """``--prompt bolt --prompt nut``: one class per prompt, named by it.

        ``--prompt "bolt=hex bolt,machine bolt"`` gives class 'bolt' several prompts.
        """
        classes = []
        for raw in prompts:
            if not raw or not raw.strip():
                raise AutolabelError("empty prompt: give --prompt with a word or phrase, e.g. --prompt bolt")
            name, _, alternatives = raw.partition("=")
            texts = [t.strip() for t in alternatives.split(",")] if alternatives else [name.strip()]
            classes.append(OntologyClass(name=name.strip(), prompts=tuple(texts)))
        return cls(classes=tuple(classes))

    @classmethod
    def load(cls, path: str | Path) -> Ontology:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise AutolabelError(f"ontology file not found: {path}")
        try:
            data = yaml.safe_load(read_text(path, "ontology"))
        except yaml.YAMLError as exc:
            raise AutolabelError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        return cls.from_dict(data, source=str(path))


def normalize_prompt(prompt: str) -> str:
    return " ".join(prompt.lower().replace(".", " ").split())
