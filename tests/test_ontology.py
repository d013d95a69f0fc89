from pathlib import Path

import pytest

from autolabel.errors import AutolabelError
from autolabel.ontology import Ontology

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_fasteners_ontology_loads():
    onto = Ontology.load(ROOT / "prompts" / "fasteners.yaml")
    assert onto.names == ["bolt", "nut", "washer", "screw"]
    assert all(len(c.prompts) >= 2 for c in onto.classes)
    assert onto.thresholds(0.2) == [0.2, 0.3, 0.35, 0.2]


@pytest.mark.parametrize(
    "prompts, names, table",
    [
        (["bolt"], ["bolt"], [("bolt", 0)]),
        (["bolt", "nut"], ["bolt", "nut"], [("bolt", 0), ("nut", 1)]),
        (
            ["bolt=hex bolt,machine bolt", "nut"],
            ["bolt", "nut"],
            [("hex bolt", 0), ("machine bolt", 0), ("nut", 1)],
        ),
    ],
)
def test_from_prompts(prompts, names, table):
    onto = Ontology.from_prompts(prompts)
    assert onto.names == names
    assert onto.prompt_table() == table


@pytest.mark.parametrize(
    "data, message",
    [
        ({"classes": []}, "no classes"),
        ({"classes": [{"name": "a"}, {"name": "a"}]}, "duplicate class names"),
        ({"classes": [{"name": "a", "prompts": [""]}]}, "empty prompt"),
        ({"classes": [{"name": "a", "box_threshold": 2}]}, "within \\[0, 1\\]"),
        ({"classes": [{"name": "a", "promts": ["x"]}]}, "unknown keys"),
        ({"classez": []}, "'classes' list"),
    ],
)
def test_bad_ontologies_are_one_line_errors(data, message):
    with pytest.raises(AutolabelError, match=message):
        Ontology.from_dict(data)


def test_prompt_shared_by_two_classes_is_refused():
    onto = Ontology.from_dict(
        {"classes": [{"name": "a", "prompts": ["Hex Nut"]}, {"name": "b", "prompts": ["hex nut"]}]}
    )
    with pytest.raises(AutolabelError, match="used by two classes"):
        onto.prompt_table()


def test_empty_prompt_from_cli():
    with pytest.raises(AutolabelError, match="empty prompt"):
        Ontology.from_prompts([" "])


def test_fingerprint_changes_with_thresholds():
    a = Ontology.from_dict({"classes": [{"name": "a"}]})
    b = Ontology.from_dict({"classes": [{"name": "a", "box_threshold": 0.5}]})
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == Ontology.from_dict({"classes": ["a"]}).fingerprint()
