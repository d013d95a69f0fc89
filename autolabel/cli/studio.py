"""Label Studio commands: ``studio start|stop|status|replay`` and the top-level ``push`` / ``pull``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autolabel.cli.common import ErrorHandlingGroup, WorkspaceOption, console, open_workspace

app = typer.Typer(
    name="studio",
    cls=ErrorHandlingGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="A local Label Studio for this workspace, and a simulated annotator.",
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="LABEL_STUDIO_URL", help="Your own Label Studio (default: this workspace's server)."
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="LABEL_STUDIO_API_KEY",
        show_default=False,
        show_envvar=True,
        help="API token (personal access token or legacy token).",
    ),
]


@app.command("start")
def start(
    workspace: WorkspaceOption = Path("."),
    port: Annotated[
        int | None, typer.Option("--port", help="Port on 127.0.0.1 (default: studio.port).")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the server to answer.")
    ] = 300.0,
) -> None:
    """Start this workspace's Label Studio (127.0.0.1, data and token under .autolabel/studio)."""
    from autolabel.studio import server

    ws = open_workspace(workspace)
    out = console()
    state = server.start(ws.studio_dir, ws.image_root, port or ws.config.studio.port, timeout=timeout)
    creds = server.read_credentials(ws.studio_dir)
    out.print(f"Label Studio running at {state.url} (pid {state.pid})")
    out.print(
        f"login: {creds.email}; password and API token in {server.credentials_path(ws.studio_dir)} (mode 0600)"
    )


@app.command("stop")
def stop(workspace: WorkspaceOption = Path(".")) -> None:
    """Stop this workspace's Label Studio."""
    from autolabel.studio import server

    ws = open_workspace(workspace)
    stopped = server.stop(ws.studio_dir)
    console().print("Label Studio stopped" if stopped else "Label Studio was not running")


@app.command("status")
def status(workspace: WorkspaceOption = Path(".")) -> None:
    """Is this workspace's Label Studio running and healthy?"""
    from autolabel.studio import server

    ws = open_workspace(workspace)
    state = server.status(ws.studio_dir)
    out = console()
    if not state.running:
        out.print("Label Studio is not running (start it with 'autolabel studio start')")
        raise typer.Exit(code=1)
    health = "healthy" if state.healthy else "not answering yet"
    out.print(f"Label Studio at {state.url} (pid {state.pid}): {health}")


@app.command("replay")
def replay(
    labels: Annotated[
        Path, typer.Option("--labels", help="YOLO ground truth: labels/<stem>.txt (+ data.yaml).")
    ],
    workspace: WorkspaceOption = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
    miss_rate: Annotated[float, typer.Option("--miss-rate", help="Probability of dropping each box.")] = 0.0,
    jitter: Annotated[
        float, typer.Option("--jitter", help="Edge noise, as a fraction of box size (std).")
    ] = 0.0,
    skip_rate: Annotated[float, typer.Option("--skip-rate", help="Probability of skipping a task.")] = 0.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    limit: Annotated[int | None, typer.Option("--limit", help="Answer at most this many tasks.")] = None,
) -> None:
    """Answer pending tasks from ground truth, through the Label Studio API (tests, demos, benchmarks)."""
    from autolabel.errors import AutolabelError
    from autolabel.progress import progress_bar
    from autolabel.studio import client as studio_client
    from autolabel.studio import replay as replay_mod
    from autolabel.studio import state

    ws = open_workspace(workspace)
    noise = replay_mod.Noise(miss_rate=miss_rate, jitter=jitter, skip_rate=skip_rate, seed=seed)
    with studio_client.connect(ws, url, token) as client, ws.open_store() as store:
        project = state.find_project(store, client.url, ws.config.studio.project_title)
        if project is None:
            raise AutolabelError("nothing pushed yet: run 'autolabel push' first")
        names = replay_mod.class_names_from(labels) or store.class_names()
        with progress_bar("replaying", total=None, unit="task") as advance:
            summary = replay_mod.replay(
                client,
                project.project_id,
                labels,
                class_names=names,
                noise=noise,
                limit=limit,
                advance=advance,
            )
    console().print(
        f"answered {summary.answered} tasks ({summary.empty} empty, {summary.boxes} boxes), skipped {summary.skipped}"
    )


def push(
    workspace: WorkspaceOption = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Tasks per import call.")] = None,
    images: Annotated[
        str,
        typer.Option(
            "--images",
            help="local: the server reads the image folder (local-files storage); upload: send copies.",
        ),
    ] = "local",
) -> None:
    """Proposed images -> Label Studio tasks with pre-labels (idempotent; rerun after any interruption)."""
    from autolabel.progress import progress_bar
    from autolabel.studio import client as studio_client
    from autolabel.studio import server, state
    from autolabel.studio.push import push as push_tasks

    ws = open_workspace(workspace)
    cfg = ws.config.studio
    document_root = Path(cfg.document_root) if cfg.document_root else server.document_root(ws.image_root)
    with studio_client.connect(ws, url, token) as client, ws.open_store() as store:
        state.ensure_schema(store)
        with progress_bar("pushing", total=None, unit="task") as advance:
            summary = push_tasks(
                store,
                client,
                image_root=ws.image_root,
                document_root=document_root,
                title=cfg.project_title,
                batch_size=batch_size or cfg.batch_size,
                advance=advance,
                image_mode=images,
                share=cfg.share_project,
            )
    out = console()
    out.print(
        f"project {summary.project_id} on {client.url}: {summary.created} tasks created, "
        f"{summary.replaced} pre-labels replaced, {summary.unchanged} unchanged"
        + (f", {summary.recovered} recovered from an interrupted push" if summary.recovered else "")
    )
    if summary.labels_added:
        out.print("labels added to the project: " + ", ".join(summary.labels_added))
    for path, reason in summary.refused:
        out.print(f"[yellow]refused[/yellow] {path}: {reason}")


def pull(
    workspace: WorkspaceOption = Path("."),
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Finished human annotations -> stored labels (incremental; rerun after any interruption)."""
    from autolabel.errors import AutolabelError
    from autolabel.progress import progress_bar
    from autolabel.studio import client as studio_client
    from autolabel.studio import state
    from autolabel.studio.pull import pull as pull_annotations

    ws = open_workspace(workspace)
    costs = ws.config.studio.costs
    with studio_client.connect(ws, url, token) as client, ws.open_store() as store:
        state.ensure_schema(store)
        with progress_bar("pulling", total=None, unit="task") as advance:
            summary = pull_annotations(
                store,
                client,
                title=ws.config.studio.project_title,
                costs=costs,
                advance=advance,
                share=ws.config.studio.share_project,
            )
        held = store.images(ids=[i for i, _ in summary.quarantined], include_errors=True)
    paths = {im.id: im.path for im in held}
    out = console()
    out.print(
        f"{summary.labeled} images labeled ({summary.empty} verified empty), {summary.skipped} skipped, "
        f"{summary.unchanged} unchanged, {summary.deleted} tasks deleted in Label Studio"
    )
    if summary.withdrawn:
        out.print(
            f"{summary.withdrawn} annotations deleted in Label Studio: their labels removed, images back in review"
        )
    if summary.quarantined:
        out.print(
            f"[yellow]{len(summary.quarantined)} annotations held back (fix or delete them in Label Studio,"
            " then pull again):[/yellow]"
        )
        for image_id, reason in summary.quarantined[:10]:
            out.print(f"  {paths.get(image_id, image_id)}: {reason}")
        if len(summary.quarantined) > 10:
            out.print(f"  ... and {len(summary.quarantined) - 10} more ('autolabel status' lists them)")
    if summary.clipped or summary.rotated:
        out.print(
            f"{summary.clipped} boxes clipped to the image, "
            f"{summary.rotated} rotated boxes replaced by their enclosing box"
        )
    message = summary.error_message()
    if message:
        raise AutolabelError(message)
