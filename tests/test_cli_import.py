import subprocess
import sys

HEAVY = (
    "torch",
    "transformers",
    "ultralytics",
    "supervision",
    "cv2",
    "faiss",
    "label_studio_sdk",
    "matplotlib",
    "onnxruntime",
)


def test_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from autolabel.cli.app import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_command_has_help():
    from typer.testing import CliRunner

    from autolabel.cli.app import app

    runner = CliRunner()
    for command in (
        "init",
        "propose",
        "preview",
        "export-labels",
        "status",
        "push",
        "pull",
        "import",
        "split",
        "train",
        "eval",
        "select",
        "loop",
        "export",
        "bench",
        "synth",
    ):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, (command, result.output)
    for group, sub in (("studio", "start"), ("studio", "replay"), ("check", "labels")):
        assert runner.invoke(app, [group, sub, "--help"]).exit_code == 0
