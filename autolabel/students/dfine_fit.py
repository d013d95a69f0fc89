"""Fine-tuning a transformers D-FINE detector on the YOLO dataset snapshot ``train.py`` writes.

The same ``data.yaml`` + images + YOLO txt labels the YOLO student reads (through
``autolabel.formats.yolo``), the model's own loss (VFL + L1 + GIoU + FGL + DDF with auxiliary and
denoising terms, computed by ``DFineForObjectDetection`` when given ``labels``), AdamW with a lower
learning rate on the backbone (D-FINE's recipe: 2.5e-4, backbone x0.05 for the small models here
scaled to a short run), a linear warm-up over the first ``warmup_epochs``, and augmentation
comparable to the YOLO student's: horizontal flip, scale jitter (a random crop-and-resize) and
colour jitter. Inputs are resized to ``imgsz`` x ``imgsz`` and scaled to [0, 1], as D-FINE's image
processor does. With ``train.ema`` (the default) an exponential moving average of the weights
(``autolabel.students.ema``: D-FINE's decay 0.9999 and warm-up ramp) is what is validated and
saved. Weights are saved with ``save_pretrained`` (``best`` on validation loss, in eval mode, when
validating each epoch, else the last epoch); ``weights/last/train_state.pt`` makes a run resumable
after every epoch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autolabel.errors import AutolabelError, first_line

if TYPE_CHECKING:
    import torch

    from autolabel.students.base import FitSettings

BASE_LR = 2.5e-4
BACKBONE_LR_MULT = 0.05
WEIGHT_DECAY = 1.25e-4
CLIP_NORM = 0.1
STATE_FILE = "train_state.pt"  # in weights/last: what resuming after that epoch needs


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path


def dataset_split(data_yaml: Path, split: str) -> tuple[list[str], list[Sample]]:
    """Class names and the (image, label file) pairs of one split of a YOLO ``data.yaml``."""
    import yaml

    from autolabel.formats import yolo

    data = yaml.safe_load(Path(data_yaml).read_text()) or {}
    names = yolo.names_from_yaml(data, str(data_yaml))
    root = Path(data.get("path") or Path(data_yaml).parent)
    folder = root / str(data.get(split, f"images/{split}"))
    if not folder.is_dir():
        raise AutolabelError(f"{data_yaml}: {split} folder {folder} not found")
    samples = []
    for image in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        rel = image.relative_to(root).as_posix()
        label_rel = rel.replace("images/", "labels/", 1) if rel.startswith("images/") else rel
        samples.append(Sample(image, (root / label_rel).with_suffix(".txt")))
    return names, samples


def read_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB pixels, boxes (N, 4) xyxy in pixels, class ids (N,)."""
    from autolabel.formats import yolo
    from autolabel.images import decode

    pixels = decode(sample.image).pixels
    height, width = pixels.shape[:2]
    if sample.label.is_file():
        det = yolo.read_label_file(sample.label, width, height)
        return pixels, det.xyxy.astype(np.float32), det.class_id.astype(np.int64)
    return pixels, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)


def augment(
    pixels: np.ndarray, xyxy: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal flip, scale jitter (crop 60-100% of each side), colour jitter; returns the kept box mask."""
    height, width = pixels.shape[:2]
    xyxy = xyxy.copy()
    if rng.random() < 0.5:
        pixels = pixels[:, ::-1]
        xyxy[:, [0, 2]] = width - xyxy[:, [2, 0]]
    scale = rng.uniform(0.6, 1.0)
    crop_w, crop_h = max(int(width * scale), 8), max(int(height * scale), 8)
    x0 = int(rng.integers(0, width - crop_w + 1))
    y0 = int(rng.integers(0, height - crop_h + 1))
    pixels = pixels[y0 : y0 + crop_h, x0 : x0 + crop_w]
    area = np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)
    xyxy = xyxy - np.array([x0, y0, x0, y0], np.float32)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, crop_w)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, crop_h)
    kept_area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    keep = (kept_area > 4) & (kept_area > 0.3 * np.maximum(area, 1e-6))
    pixels = pixels.astype(np.float32)
    pixels = pixels * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)  # contrast, brightness
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = grey + (pixels - grey) * rng.uniform(0.7, 1.3)  # saturation
    return np.clip(pixels, 0, 255).astype(np.uint8), xyxy[keep], keep


def to_tensor(images: Sequence[np.ndarray], imgsz: int) -> torch.Tensor:
    """RGB uint8 arrays -> (B, 3, imgsz, imgsz) float in [0, 1] (D-FINE's resize and rescale)."""
    import torch
    import torch.nn.functional as F

    batch = []
    for image in images:
        pixels = np.ascontiguousarray(image)
        if not pixels.flags.writeable:  # decoded images can be read-only views; torch wants to own them
            pixels = pixels.copy()
        t = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0
        batch.append(F.interpolate(t, size=(imgsz, imgsz), mode="bilinear", align_corners=False)[0])
    return torch.stack(batch)


def target(xyxy: np.ndarray, class_id: np.ndarray, width: int, height: int, device) -> dict:
    """One image's boxes as the model's loss wants them: normalized cx, cy, w, h."""
    import torch

    boxes = np.zeros((len(xyxy), 4), np.float32)
    if len(xyxy):
        boxes[:, 0] = (xyxy[:, 0] + xyxy[:, 2]) / 2 / width
        boxes[:, 1] = (xyxy[:, 1] + xyxy[:, 3]) / 2 / height
        boxes[:, 2] = (xyxy[:, 2] - xyxy[:, 0]) / width
        boxes[:, 3] = (xyxy[:, 3] - xyxy[:, 1]) / height
    return {
        "class_labels": torch.as_tensor(class_id, dtype=torch.long, device=device),
        "boxes": torch.as_tensor(boxes.clip(0, 1), device=device),
    }


def optimizer(model, epochs_steps: int, warmup_steps: int):
    """AdamW with the backbone at ``BACKBONE_LR_MULT`` of the base LR, no decay on norms and biases;
    a linear warm-up then a constant rate."""
    import torch

    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        backbone = ".backbone." in f".{name}"
        no_decay = param.ndim <= 1
        groups.setdefault((backbone, no_decay), []).append(param)
    param_groups = [
        {
            "params": params,
            "lr": BASE_LR * (BACKBONE_LR_MULT if backbone else 1.0),
            "weight_decay": 0.0 if no_decay else WEIGHT_DECAY,
        }
        for (backbone, no_decay), params in groups.items()
    ]
    opt = torch.optim.AdamW(param_groups, lr=BASE_LR, betas=(0.9, 0.999))
    warmup = max(int(warmup_steps), 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
    )
    return opt, scheduler


def fit_model(
    model, data_yaml: Path, settings: FitSettings, run_dir: Path, device: str
) -> tuple[Path, dict, list[float]]:
    """Train ``model`` in place; returns (weights file, metrics, seconds per epoch).

    With ``settings.ema`` the EMA of the weights (``autolabel.students.ema``) is what is validated,
    saved and left in ``model`` at the end. Each epoch ends with ``weights/last`` (the weights a
    student loads) and its ``train_state.pt`` (model, optimizer, schedule, EMA, random states): a
    ``fit_model`` into the same ``run_dir`` continues after the last finished epoch."""
    import torch

    from autolabel.progress import progress_bar
    from autolabel.students.ema import model_ema

    _, train = dataset_split(data_yaml, "train")
    _, val = dataset_split(data_yaml, "val")
    if not train:
        raise AutolabelError(f"{data_yaml}: no training images")
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model.to(device)
    batch = max(1, min(int(settings.batch), len(train)))
    steps_per_epoch = (len(train) + batch - 1) // batch
    opt, scheduler = optimizer(
        model, settings.epochs * steps_per_epoch, settings.warmup_epochs * steps_per_epoch
    )
    use_amp = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ema = model_ema(model) if settings.ema else None
    weights_dir = run_dir / "weights"
    done = {"epoch": 0, "best_loss": None, "best_epoch": None, "epoch_seconds": [], "history": []}
    state_file = weights_dir / "last" / STATE_FILE
    if state_file.is_file():
        done = _restore(state_file, model, opt, scheduler, scaler, ema, rng)
    best_loss, best_epoch = done["best_loss"], done["best_epoch"]
    epoch_seconds, history = done["epoch_seconds"], done["history"]
    cache = {s.image: read_sample(s) for s in train}
    for epoch in range(done["epoch"], settings.epochs):
        started = time.perf_counter()
        model.train()
        order = rng.permutation(len(train))
        losses = []
        with progress_bar(f"epoch {epoch + 1}/{settings.epochs}", total=len(train)) as advance:
            for first in range(0, len(order), batch):
                chosen = [train[i] for i in order[first : first + batch]]
                images, labels = [], []
                for sample in chosen:
                    pixels, xyxy, class_id = cache[sample.image]
                    pixels, xyxy, keep = augment(pixels, xyxy, rng)
                    images.append(pixels)
                    labels.append(target(xyxy, class_id[keep], pixels.shape[1], pixels.shape[0], device))
                inputs = to_tensor(images, settings.imgsz).to(device)
                with torch.autocast("cuda", enabled=use_amp):
                    loss = model(pixel_values=inputs, labels=labels).loss
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
                scaler.step(opt)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                losses.append(float(loss.detach()))
                advance(len(chosen))
        kept = ema.module if ema is not None else model  # what is validated and saved
        val_loss = None
        if val and (settings.val_each_epoch or epoch == settings.epochs - 1):
            val_loss = validation_loss(kept, val, settings.imgsz, batch, device)
        epoch_seconds.append(time.perf_counter() - started)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_loss": val_loss})
        if not settings.val_each_epoch or val_loss is None or best_loss is None or val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch + 1
            kept.save_pretrained(weights_dir / "best")
        kept.save_pretrained(weights_dir / "last")
        done = {"epoch": epoch + 1, "best_loss": best_loss, "best_epoch": best_epoch,
                "epoch_seconds": epoch_seconds, "history": history}  # fmt: skip
        _save_state(state_file, done, model, opt, scheduler, scaler, ema, rng)
        if settings.patience and best_epoch is not None and epoch + 1 - best_epoch >= settings.patience:
            break
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    _write_history(run_dir / "results.csv", history, epoch_seconds)
    metrics = {"val_loss": None if best_loss is None else round(best_loss, 5), "best_epoch": best_epoch}
    return weights_dir / "best" / "model.safetensors", metrics, epoch_seconds


def _save_state(path: Path, done: dict, model, opt, scheduler, scaler, ema, rng) -> None:
    """What resuming after this epoch needs, written atomically next to ``weights/last``."""
    import torch

    state = {
        **done,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "ema": None if ema is None else ema.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": rng.bit_generator.state,
    }
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    partial.replace(path)


def _restore(path: Path, model, opt, scheduler, scaler, ema, rng) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if state["ema"] is None:
                raise AutolabelError("it was trained without EMA")
            ema.load_state_dict(state["ema"])
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise AutolabelError(f"{path}: cannot resume from it ({first_line(exc)})") from None
    except AutolabelError as exc:
        raise AutolabelError(f"{path}: cannot resume from it ({exc})") from None
    torch.set_rng_state(state["torch_rng"])
    rng.bit_generator.state = state["numpy_rng"]
    return {k: state[k] for k in ("epoch", "best_loss", "best_epoch", "epoch_seconds", "history")}


def validation_loss(model, val: list[Sample], imgsz: int, batch: int, device: str) -> float:
    """The model's loss on the validation images (no augmentation, no denoising queries) in eval
    mode: in train mode the encoder's batch norms would learn the validation images' statistics."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for first in range(0, len(val), batch):
            images, labels = [], []
            for sample in val[first : first + batch]:
                pixels, xyxy, class_id = read_sample(sample)
                images.append(pixels)
                labels.append(target(xyxy, class_id, pixels.shape[1], pixels.shape[0], device))
            out = model(pixel_values=to_tensor(images, imgsz).to(device), labels=labels)
            total += float(out.loss) * len(images)
            count += len(images)
    model.train(was_training)
    return total / max(count, 1)


def _write_history(path: Path, history: list[dict], seconds: list[float]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", "train_loss", "val_loss", "time"])
        cumulative = 0.0
        for row, s in zip(history, seconds):
            cumulative += s
            writer.writerow([row["epoch"], row["train_loss"], row["val_loss"], round(cumulative, 3)])


__all__: Sequence[str] = ("dataset_split", "fit_model", "read_sample", "to_tensor")
