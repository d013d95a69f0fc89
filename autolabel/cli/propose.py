from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autolabel.cli.common import (
    CpusPerWorkerOption,
    EngineOption,
    GpusPerWorkerOption,
    RayAddressOption,
    WorkersOption,
    WorkspaceOption,
    console,
    engine_config,
    open_workspace,
)


def propose(
    prompt: Annotated[
        list[str] | None,
        typer.Option(
            "--prompt",
            "-p",
            help="A class to find; repeat for more. 'bolt=hex bolt,machine bolt' gives a class several prompts.",
        ),
    ] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompt ontology YAML (see prompts/fasteners.yaml).")
    ] = None,
    workspace: WorkspaceOption = Path("."),
    model: Annotated[
        str | None, typer.Option(help="grounding-dino | owlv2 | yolo-world | groundingdino-py")
    ] = None,
    model_path: Annotated[
        str | None, typer.Option(help="Local weights (a save_pretrained folder or a .pt file).")
    ] = None,
    box_threshold: Annotated[float | None, typer.Option(min=0, max=1)] = None,
    text_threshold: Annotated[float | None, typer.Option(min=0, max=1)] = None,
    max_det: Annotated[int | None, typer.Option(min=1)] = None,
    nms_iou: Annotated[
        float | None, typer.Option(min=0, max=1, help="Per-class NMS at this IoU (off by default).")
    ] = None,
    class_agnostic_nms: Annotated[bool, typer.Option(help="NMS across classes.")] = False,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda | mps")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    fp16: Annotated[bool | None, typer.Option("--fp16/--no-fp16", help="Half precision on CUDA.")] = None,
    runtime: Annotated[
        str | None,
        typer.Option(
            help="auto | torch | onnx | openvino (owlv2, grounding-dino): auto (default) uses the fastest"
            " runtime that passes parity on this machine, chosen once and recorded; onnx/openvino export"
            " once, cache and parity-check."
        ),
    ] = None,
    torch_compile: Annotated[
        bool | None, typer.Option("--torch-compile/--no-torch-compile", help="torch.compile on CUDA.")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Propose again images already proposed with this model and ontology.")
    ] = False,
    preview: Annotated[
        int, typer.Option(help="Images in the preview grid written at the end (0: none).")
    ] = 16,
    save: Annotated[
        bool,
        typer.Option(
            "--save/--no-save",
            help="Remember these proposer options and prompts in autolabel.yaml, so that 'loop' and"
            " 'select' pre-label with the same model (and reuse these pre-labels).",
        ),
    ] = True,
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    workers: WorkersOption = None,
    gpus_per_worker: GpusPerWorkerOption = None,
    cpus_per_worker: CpusPerWorkerOption = None,
) -> None:
    """Pre-label every image with an open-vocabulary detector (resumable; new images are registered first)."""
    from contextlib import closing
    from functools import partial

    from autolabel.cli.init import print_scan_problems, register_with_progress
    from autolabel.engine import count_pending, model_key, propose_on, remember_proposer
    from autolabel.engines import make_engine
    from autolabel.errors import AutolabelError
    from autolabel.ontology import Ontology
    from autolabel.progress import progress_bar
    from autolabel.proposers import build_proposer
    from autolabel.proposers.base import BatchMapper

    ws = open_workspace(workspace)
    if prompt and prompts:
        raise AutolabelError("give either --prompt or --prompts, not both")
    if prompt:
        ontology = Ontology.from_prompts(prompt)
    elif prompts:
        ontology = Ontology.load(prompts)
    elif ws.ontology_path():
        ontology = Ontology.load(ws.ontology_path())
    else:
        raise AutolabelError(
            "no prompts: give --prompt bolt (repeatable) or --prompts prompts/fasteners.yaml"
        )

    cfg = ws.config.proposer
    overrides = {
        "model": model,
        "model_path": model_path,
        "box_threshold": box_threshold,
        "text_threshold": text_threshold,
        "max_det": max_det,
        "nms_iou": nms_iou,
        "device": device,
        "batch_size": batch_size,
        "fp16": fp16,
        "runtime": runtime,
        "torch_compile": torch_compile,
    }
    values = {k: v for k, v in overrides.items() if v is not None}
    values["class_agnostic_nms"] = class_agnostic_nms or cfg.class_agnostic_nms
    settings = cfg.model_copy(update=values)

    runner = make_engine(
        engine_config(
            ws.config.engine,
            kind=engine,
            ray_address=ray_address,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
        ),
        ws.root,
    )
    out = console()
    scan = register_with_progress(ws)
    if scan.new:
        out.print(f"{scan.new} new images registered")
        print_scan_problems(scan)

    with ws.open_store() as store, closing(runner):
        ids = store.ensure_classes(ontology.names)
        class_ids = [ids[name] for name in ontology.names]
        out.print(f"loading {settings.model} ({settings.model_path or 'default weights'}) ...")
        build = partial(build_proposer, settings, ontology)
        mapper = BatchMapper(build)
        key = model_key(settings, mapper.model_version, ontology.fingerprint())
        todo, _ = count_pending(store, key, force)
        with progress_bar("proposing", total=todo) as advance:
            summary = propose_on(
                runner, build, mapper, store, ws.image_root, class_ids, settings, key, force, advance
            )
        remember_proposer(
            store, settings, key, mapper.model_version, ontology.fingerprint(), runtime_of(mapper.proposer)
        )
        if save:
            out.print(save_proposer(ws, settings, ontology, prompts if not prompt else None))
        names = store.class_names()
        out.print(
            f"proposed {summary.proposed} images in {summary.seconds:.1f} s "
            f"({summary.images_per_second:.2f} img/s); {summary.skipped} already done with this model"
        )
        if summary.boxes_per_class:
            counts = ", ".join(f"{names[c]} {n}" for c, n in sorted(summary.boxes_per_class.items()))
            out.print(f"boxes: {counts}")
        for label, problems in (
            ("unreadable", summary.decode_errors),
            ("model errors", summary.model_errors),
        ):
            if problems:
                out.print(f"[yellow]{len(problems)} {label}:[/yellow]")
                for path, reason in problems:
                    out.print(f"  {path}: {reason}")
        if preview and summary.proposed:
            path = write_preview(ws, store, key, preview)
            out.print(f"preview: {path}")


def runtime_of(proposer) -> dict:
    """The runtime the proposer runs in and the line that said why (``proposers.runtime_select``)."""
    selections = getattr(proposer, "selections", None) or [getattr(proposer, "selection", None)]
    selections = [s for s in selections if s is not None]
    if not selections:
        return {"runtime": "torch"}
    return {
        "runtime": "+".join(sorted({s.used for s in selections})),
        "runtime_reason": "; ".join(s.note for s in selections if s.note) or None,
    }


def save_proposer(ws, settings, ontology, prompts_file: Path | None) -> str:
    """Write the proposer section (and the prompts, when the workspace has other or none) to
    autolabel.yaml; the one line that says so."""
    import yaml

    from autolabel.cli.init import _relative_or_absolute
    from autolabel.ontology import Ontology
    from autolabel.workspace import Workspace

    update: dict = {"proposer": settings}
    current = ws.ontology_path()
    if current is None or not current.is_file() or Ontology.load(current) != ontology:
        if prompts_file is not None:
            update["ontology"] = _relative_or_absolute(prompts_file, ws.root)
        else:
            path = ws.root / "ontology.yaml"
            path.write_text(yaml.safe_dump(ontology.to_dict(), sort_keys=False))
            update["ontology"] = path.name
    Workspace(root=ws.root, config=ws.config.model_copy(update=update)).save()
    what = "proposer settings and prompts" if "ontology" in update else "proposer settings"
    return f"saved the {what} to autolabel.yaml: 'loop' and 'select' pre-label with the same model (--no-save: don't)"


def write_preview(ws, store, key: str, n: int) -> Path:
    from autolabel import detections as dets
    from autolabel.preview import write_preview as write_grid

    items = [(rel, dets.from_json(det_json)) for rel, det_json in store.predictions_with_paths(key, n)]
    return write_grid(ws.image_root, items, store.class_names(), ws.root / "previews" / "propose.png").path
