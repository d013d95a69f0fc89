"""What every command shares: the workspace option, console output, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from autolabel.errors import AutolabelError, first_line

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
        except (typer.Exit, typer.Abort, typer.TyperException):  # click's flow: exits, usage errors
            raise
        except Exception as exc:  # noqa: BLE001 - any crash: one line here, the traceback in the log
            raise _unexpected(exc) from None


def _unexpected(exc: Exception) -> Exception | typer.Exit:
    """A bug or a library's failure: the traceback goes to the workspace log, one line to the user.

    With ``--verbose`` (or before a workspace was opened, when there is no log yet) it is raised.
    """
    import logging

    from autolabel.runtime import current_log_path

    log_path = current_log_path()
    if log_path is None or verbose_requested():
        return exc
    logging.getLogger("autolabel").error("unexpected error", exc_info=exc)
    typer.echo(
        f"error: unexpected {type(exc).__name__}: {first_line(exc, default='')} (traceback in {log_path};"
        " rerun with --verbose to see it here)",
        err=True,
    )
    return typer.Exit(code=1)


VERBOSE_ENV = "AUTOLABEL_VERBOSE"  # set from the global --verbose by the root callback


def verbose_requested() -> bool:
    """The global ``--verbose`` flag (or ``AUTOLABEL_VERBOSE=1``) of the running command."""
    return os.environ.get(VERBOSE_ENV, "") == "1"


def console():
    from rich.console import Console

    return Console(stderr=False, highlight=False, soft_wrap=True)


def open_workspace(path: Path):
    """Load the workspace and apply the process-wide environment hygiene once."""
    from autolabel.workspace import Workspace

    ws = Workspace.load(path)
    configure_process(ws)
    return ws


def configure_process(ws) -> None:
    """Environment hygiene, and warnings and library logging into the workspace log (``--verbose``: also here)."""
    from autolabel.runtime import configure_environment, configure_logging

    configure_environment(ws.cache_dir)
    configure_logging(ws.log_path, verbose=verbose_requested())


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


StudentOption = Annotated[
    str | None,
    typer.Option(
        "--student",
        help="yolo (ultralytics, AGPL-3.0) | dfine-n | dfine-s (transformers D-FINE, Apache-2.0). Default: train.student.",
    ),
]
