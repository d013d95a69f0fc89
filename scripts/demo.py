"""The offline demo behind `bash scripts/demo.sh`: every step is a real `autolabel` command.

1. generate fastener scenes with exact ground truth (`autolabel synth`),
2. build a small Grounding DINO with RANDOM weights locally (nothing can be downloaded here; with
   internet or cached weights, drop --model-path and the real grounding-dino-tiny is used),
3. `autolabel init`, `autolabel propose`, `autolabel preview`, `autolabel export-labels`,
4. the active-learning loop (``loop/demo.yaml``) with a local Label Studio and the replay
   annotator: the student is the official ``yolo11n.pt`` when the machine is online (ultralytics
   fetches it), else ``yolo11n.yaml`` trained from scratch on easy scenes (large objects, no
   clutter) so that a 2-core CPU sees it learn within minutes; then the status table and plot,
   and the exported student.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "autolabel"


def say(message: str) -> None:
    print(f"\n== {message}", flush=True)


def run(*args: str) -> None:
    print("$ autolabel " + " ".join(args), flush=True)
    subprocess.run([str(BIN), *args], check=True)


def has_command(name: str) -> bool:
    out = subprocess.run([str(BIN), name, "--help"], capture_output=True, check=False)
    return out.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, default=REPO / "demo")
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--difficulty", default="easy", help="synthetic scenes: easy | normal")
    parser.add_argument("--no-loop", action="store_true", help="stop after propose / preview / export-labels")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the proposer is a locally built random-weight model
    # YOLO_OFFLINE is left to the user: online, the loop fetches the official yolo11n.pt student.
    root = args.dir.resolve()
    from autolabel.runtime import configure_environment

    configure_environment(root / ".cache")  # library caches inside the demo folder, never in $HOME
    # the proposer's exports of the demo's locally built model too (real weights' exports sit beside
    # the Hugging Face cache they come from)
    os.environ.setdefault("AUTOLABEL_EXPORT_CACHE", str(root / ".cache" / "autolabel-exports"))
    scenes, ws, model_dir = root / "scenes", root / "ws", root / "models" / "tiny-grounding-dino"

    if not (scenes / "data.yaml").exists():
        say("generating fastener scenes with exact boxes")
        run(
            "synth",
            "--out",
            str(scenes),
            "--n",
            str(args.images),
            "--seed",
            "0",
            "--imgsz",
            str(args.imgsz),
            "--difficulty",
            args.difficulty,
        )

    if not (model_dir / "config.json").exists():
        say("building a small Grounding DINO with RANDOM weights (offline: no weights can be downloaded)")
        sys.path.insert(0, str(REPO))
        from tests.tiny_models import build_tiny_grounding_dino

        build_tiny_grounding_dino(model_dir)

    say("workspace")
    run(
        "init",
        "--images",
        str(scenes / "images"),
        "-w",
        str(ws),
        "--ontology",
        str(REPO / "prompts" / "fasteners.yaml"),
    )

    say(
        "pre-labeling (random-weight model: the boxes show the pipeline works, not what a trained detector finds)"
    )
    run(
        "propose",
        "-w",
        str(ws),
        "--prompts",
        str(REPO / "prompts" / "fasteners.yaml"),
        "--model-path",
        str(model_dir),
        "--box-threshold",
        "0.2",
        "--text-threshold",
        "0.2",
        "--max-det",
        "10",
    )
    run("preview", "-w", str(ws), "--n", "16", "--out", str(root / "preview.png"))
    run(
        "export-labels",
        "-w",
        str(ws),
        "--format",
        "coco",
        "--source",
        "predictions",
        "--status",
        "proposed",
        "--out",
        str(root / "export-coco"),
    )
    run(
        "export-labels",
        "-w",
        str(ws),
        "--format",
        "yolo",
        "--source",
        "predictions",
        "--status",
        "proposed",
        "--out",
        str(root / "export-yolo"),
    )
    run("status", "-w", str(ws))

    if args.no_loop:
        return
    if not has_command("loop"):
        say("the active-learning loop is not part of this build yet; stopping after propose")
        return
    say(
        "active-learning loop: local Label Studio + replay annotator answering from the generated ground truth"
    )
    print(
        f"{args.rounds} rounds of {args.budget} images; each round: select (round 0: typicality, then the student's"
        f" uncertainty + diversity), pre-label with the student, push to Label Studio, the replay annotator corrects,"
        f" pull, train {args.epochs} epochs at {args.imgsz} px warm-started from the last round, evaluate on the"
        f" frozen validation set. The student starts from yolo11n.pt when it is on disk or the machine is online,"
        f" else from scratch (the warning says so).",
        flush=True,
    )
    run("studio", "start", "-w", str(ws))
    try:
        run(
            "loop",
            "-w",
            str(ws),
            "--recipe",
            str(REPO / "loop" / "demo.yaml"),
            "--annotator",
            "replay",
            "--labels",
            str(scenes),
            "--rounds",
            str(args.rounds),
            "--budget",
            str(args.budget),
            "--epochs",
            str(args.epochs),
            "--imgsz",
            str(args.imgsz),
        )
        run("status", "-w", str(ws))
        run("export", "-w", str(ws), "--format", "onnx")
    finally:
        run("studio", "stop", "-w", str(ws))
    report = json.loads(
        subprocess.run(
            [str(BIN), "status", "-w", str(ws), "--json"], check=True, capture_output=True, text=True
        ).stdout
    )
    rounds = report["rounds"]
    if rounds:
        curve = ", ".join(f"{r['map50']:.2f}" for r in rounds if r["map50"] is not None)
        say(f"frozen-val mAP50 by round: {curve} (plot: {ws / 'previews' / 'map_vs_labels.png'})")
    say(f"done: see {root}")


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
