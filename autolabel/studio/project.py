"""Which Label Studio project a workspace syncs with, and that it is this workspace's own.

A workspace owns its project: the project's description names the workspace id (``owner_mark``).
``ensure_project`` (push) finds or creates it with every class as a label; ``check_owner`` (push
and pull) refuses a project another workspace owns. The project rows live in ``studio.state``.
"""

from __future__ import annotations

from pathlib import Path

from autolabel.errors import AutolabelError
from autolabel.formats import labelstudio as lsfmt
from autolabel.studio import state
from autolabel.studio.state import Project

__all__ = [
    "OWNER_MARK",
    "check_owner",
    "ensure_project",
    "owner_mark",
    "project_labels",
    "project_owner",
    "round_instructions",
    "set_instructions",
]

OWNER_MARK = "autolabel workspace "


def owner_mark(store) -> str:
    """What a project's description says when this workspace owns it."""
    return f"{OWNER_MARK}{store.workspace_id()}"


def project_owner(description: str | None) -> str | None:
    """The workspace id a project's description names, or None (not made by autolabel, or older)."""
    for line in (description or "").splitlines():
        if line.startswith(OWNER_MARK):
            return line[len(OWNER_MARK) :].strip() or None
    return None


def check_owner(store, client, project: Project, share: bool = False) -> None:
    """Refuse to sync with a project another workspace owns (a shared title, a copied state.db)."""
    if share:
        return
    remote = client.get_project(project.project_id)
    if remote is None:
        raise AutolabelError(
            f"Label Studio project {project.project_id} ('{project.title}') no longer exists on {client.url}: "
            "set studio.project_title to a new title to push into a new project"
        )
    owner = project_owner(remote.get("description"))
    if owner is not None and owner != store.workspace_id():
        raise AutolabelError(
            f"Label Studio project {project.project_id} belongs to another autolabel workspace ({owner[:8]}); "
            "this workspace will not push to or pull from it (set studio.share_project: true to share it)"
        )


def ensure_project(
    store, client, title: str, class_names: list[str], image_root: Path | None, *, share: bool = False
) -> tuple[Project, list[str]]:
    """The project for this workspace (created or found) with every class as a label, in id order.

    A workspace owns its project: the project's description names the workspace id. A project with
    the same title owned by another workspace (or not made by autolabel) is left alone and this
    workspace gets its own (the title plus its id), unless ``share`` asks to use it.
    """
    if not 3 <= len(title) <= 50:
        raise AutolabelError(
            f"studio.project_title must have 3 to 50 characters (Label Studio's limit): {title!r}"
        )
    project = state.find_project(store, client.url, title)
    if project is not None:
        check_owner(store, client, project, share)
    else:
        project_id, labels = _remote_project(store, client, title, class_names, share)
        project = state.add_project(store, client.url, project_id, title, labels)
    added: list[str] = []
    if list(project.labels) != list(class_names):
        if list(class_names[: len(project.labels)]) != list(project.labels) and project.labels:
            raise AutolabelError(
                f"the project's labels {list(project.labels)} are not a prefix of the workspace classes "
                f"{class_names}: class order is fixed once a project exists"
            )
        added = [n for n in class_names if n not in project.labels]
        client.set_label_config(project.project_id, lsfmt.label_config(class_names))
        project = state.set_project_labels(store, project, class_names)
    if image_root is not None:
        client.ensure_local_storage(project.project_id, image_root)
    return project, added


def _remote_project(store, client, title: str, class_names: list[str], share: bool) -> tuple[int, list[str]]:
    """(Label Studio's id, its labels) of this workspace's project of that title, created if needed."""
    remote = client.find_project(title)
    if remote is not None and not share and project_owner(remote.get("description")) != store.workspace_id():
        title_on_server = f"{title[:40]} {store.workspace_id()[:8]}"  # someone else's: make our own
        remote = client.find_project(title_on_server)
    else:
        title_on_server = title
    if remote is None:
        description = (
            f"Pre-labels from autolabel; pull corrections with 'autolabel pull'.\n{owner_mark(store)}"
        )
        try:
            remote = client.create_project(title_on_server, lsfmt.label_config(class_names), description)
        except Exception:
            remote = client.find_project(title_on_server)  # created before the answer was lost?
            if remote is None:
                raise
    return remote["id"], project_labels(remote["label_config"])


def project_labels(label_config: str) -> list[str]:
    """The RectangleLabels values of a label config, in order ([] when it does not parse)."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(label_config)
    except ET.ParseError:
        return []
    labels = []
    for tag in root.iter():
        if tag.tag == "RectangleLabels":
            labels += [lab.get("value") for lab in tag.iter("Label") if lab.get("value") is not None]
    return labels


def round_instructions(round_index: int, remaining: int, class_names: list[str], student: bool) -> str:
    """What annotators read before labeling (the project's instructions): the round's purpose,
    how to correct a pre-label, the label hotkeys and how many tasks remain."""
    from html import escape

    if student:
        purpose = (
            "images the current student model is least sure about; the boxes shown are its pre-labels"
            " (sort by prediction score to see the least confident first)"
        )
    else:
        purpose = "a first batch chosen to cover the variety of the images; the boxes shown are pre-labels"
    keys = ", ".join(
        f"{lsfmt.HOTKEYS[i]} {escape(name)}" for i, name in enumerate(class_names[: len(lsfmt.HOTKEYS)])
    )
    return (
        f"<p><b>Round {round_index}</b>: {escape(purpose)}.</p>"
        "<p>Fix every box: move or resize it, change its label, delete wrong ones, draw missed ones;"
        " submit an image without objects as it is.</p>"
        f"<p>Label hotkeys: {keys}.</p>"
        f"<p><b>{remaining} tasks remain</b> in this round's queue.</p>"
    )


def set_instructions(store, client, project: Project, round_index: int, student: bool) -> int:
    """Show the round's instructions before labeling; the number of tasks still to annotate."""
    annotated = state.annotated_image_ids(store, project)
    tasks = state.tasks_by_image(store, project)
    remaining = sum(
        1 for image_id, task in tasks.items() if task.state == "pushed" and image_id not in annotated
    )
    text = round_instructions(round_index, remaining, list(project.labels), student)
    client.update_project(project.project_id, expert_instruction=text, show_instruction=True)
    return remaining
