"""What every command shares: the workspace option, console output, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from autolabel.errors import AutolabelError

WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace", "-w", envvar="AUTOLABEL_WORKSPACE", help="Workspace folder (autolabel.yaml)."
    ),
]


USER_ERROR_EXIT_CODE = 2


def fail(message: str) -> typer.Exit:
    """Print one 'error: ...' line on stderr; the caller raises the returned Exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=USER_ERROR_EXIT_CODE)


class ErrorHandlingGroup(TyperGroup):
    """Turns AutolabelError (and a few known user mistakes) into one line, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AutolabelError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted; rerun the same command to resume") from None


def console():
    from rich.console import Console

    return Console(stderr=False, highlight=False, soft_wrap=True)


def open_workspace(path: Path):
    """Load the workspace and apply the process-wide environment hygiene once."""
    from autolabel.runtime import configure_environment
    from autolabel.workspace import Workspace

    ws = Workspace.load(path)
    configure_environment(ws.cache_dir)
    return ws


EngineOption = Annotated[
    str | None, typer.Option("--engine", help="local | ray: where the heavy, parallel work runs.")
]
RayAddressOption = Annotated[
    str | None,
    typer.Option("--ray-address", help="Join this Ray cluster ('auto' or host:port; default: a local one)."),
]
WorkersOption = Annotated[
    str | None,
    typer.Option("--workers", help="Ray actor pool size MIN:MAX (e.g. 1:8; '2:' = 2 up to one per CPU)."),
]
GpusPerWorkerOption = Annotated[float | None, typer.Option("--gpus-per-worker", min=0)]
CpusPerWorkerOption = Annotated[float | None, typer.Option("--cpus-per-worker", min=0.01)]


def engine_config(base, **flags):
    """The workspace's (or recipe's) ``engine:`` section with the CLI's engine flags over it."""
    from pydantic import ValidationError

    from autolabel.config import EngineConfig, describe_validation_error

    values = {**base.model_dump(), **{k: v for k, v in flags.items() if v is not None}}
    try:
        return EngineConfig.model_validate(values)
    except ValidationError as exc:
        raise AutolabelError(f"engine: {describe_validation_error(exc)}") from None
