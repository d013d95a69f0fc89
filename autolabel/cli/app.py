"""The ``autolabel`` command line. Commands are registered here; each lives in its own module.

Nothing heavy is imported at module level so ``autolabel --help`` stays fast.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from autolabel.cli import dataset as dataset_cmd
from autolabel.cli import export as export_cmd
from autolabel.cli import init as init_cmd
from autolabel.cli import labels as labels_cmd
from autolabel.cli import loop as loop_cmd
from autolabel.cli import propose as propose_cmd
from autolabel.cli import report as report_cmd
from autolabel.cli import status as status_cmd
from autolabel.cli import studio as studio_cmd
from autolabel.cli import train as train_cmd
from autolabel.cli.common import VERBOSE_ENV, ErrorHandlingGroup

app = typer.Typer(
    name="autolabel",
    cls=ErrorHandlingGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="From a folder of unlabeled photos to a trained, exported object detector.",
)


@app.callback()
def _root(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            envvar=VERBOSE_ENV,
            help="Also show library warnings, logging and tracebacks here (always in .autolabel/logs/).",
        ),
    ] = False,
) -> None:
    """From a folder of unlabeled photos to a trained, exported object detector."""
    # one switch for this command and the processes it starts (the log is set up with the workspace)
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"


app.command("init")(init_cmd.init)
app.command("export-labels")(labels_cmd.export_labels)
app.command("preview")(labels_cmd.preview)
app.command("synth")(dataset_cmd.synth)
app.command("import")(dataset_cmd.import_labels)
app.command("split")(dataset_cmd.split)
app.add_typer(dataset_cmd.check_app, name="check")
app.command("propose")(propose_cmd.propose)
app.command("status")(status_cmd.status)
app.command("report")(report_cmd.report)
app.command("loop")(loop_cmd.loop)
app.command("select")(loop_cmd.select_batch)
app.add_typer(studio_cmd.app, name="studio")
app.command("push")(studio_cmd.push)
app.command("pull")(studio_cmd.pull)
app.command("train")(train_cmd.train)
app.command("eval")(train_cmd.evaluate)
app.command("export")(export_cmd.export)
app.command("bench")(export_cmd.bench)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
