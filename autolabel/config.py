"""Typed workspace settings (``autolabel.yaml``), one model per concern, CLI flags override the file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autolabel.errors import AutolabelError, read_text

CONFIG_NAME = "autolabel.yaml"
STATE_DIR = ".autolabel"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GroupingConfig(_Section):
    """How images are grouped into correlated sources (never split across train/val).

    auto (the default): the first rule that fits the folder: subfolders when the image root has
    them, else EXIF capture-time sessions when most images carry a capture time (the gap chosen
    from the times), else frame sequences from file names ('clip12_000345.jpg' -> clip12), else
    one group per image (``images.auto_grouping``; near-duplicates still join at split time).
    folder: the image's folder relative to the image root.
    regex: the first capture group of ``regex`` matched against the relative path (video frames).
    exif_gap: capture sessions: a new group starts when EXIF time jumps by more than ``gap_seconds``.
    """

    mode: Literal["auto", "folder", "regex", "exif_gap"] = "auto"
    regex: str | None = None
    gap_seconds: float = Field(default=60.0, gt=0)


class ProposerConfig(_Section):
    model: str = "grounding-dino"
    model_path: str | None = None
    box_threshold: float = Field(default=0.3, ge=0, le=1)
    text_threshold: float = Field(default=0.25, ge=0, le=1)
    max_det: int = Field(default=100, gt=0)
    nms_iou: float | None = Field(default=None, gt=0, le=1)
    class_agnostic_nms: bool = False
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    batch_size: int = Field(default=2, gt=0)
    fp16: bool = True
    max_side: int | None = Field(default=None, gt=0)
    # How the image side runs (owlv2, grounding-dino; proposers/runtime_select.py): auto (the fastest
    # that passes parity here, chosen once and recorded), torch eager, or a cached, parity-checked
    # ONNX Runtime / OpenVINO export.
    runtime: Literal["auto", "torch", "onnx", "openvino"] = "auto"
    torch_compile: bool = False  # CUDA only (proposers/torch_speed.py)


class AnnotationCostConfig(_Section):
    """Seconds per human action (``studio.costs``), the cost model of ``autolabel.studio.diff``
    (which documents the defaults and their sources, and calls it ``CostModel``)."""

    draw: float = Field(default=7.0, ge=0)
    verify: float = Field(default=1.6, ge=0)
    adjust: float = Field(default=5.0, ge=0)
    relabel: float = Field(default=3.0, ge=0)
    delete: float = Field(default=2.0, ge=0)
    per_image: float = Field(default=2.0, ge=0)

    def seconds(self, correction) -> float:
        """Estimated time to correct a pre-label into its labels (a ``studio.diff.Correction``)."""
        return round(
            self.per_image
            + correction.kept * self.verify
            + correction.moved * self.adjust
            + correction.relabeled * self.relabel
            + correction.deleted * self.delete
            + correction.added * self.draw,
            3,
        )

    def from_scratch(self, n_boxes: int) -> float:
        """The same image labeled without pre-labels: every box drawn."""
        return round(self.per_image + n_boxes * self.draw, 3)


class StudioConfig(_Section):
    url: str | None = None
    port: int = Field(default=8089, gt=0, lt=65536)
    project_title: str = "autolabel"
    # A workspace owns its Label Studio project; true lets several workspaces use one project.
    share_project: bool = False
    batch_size: int = Field(default=500, gt=0)
    # The server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the image root's parent, as
    # 'autolabel studio start' sets it); task image URLs are relative to it.
    document_root: str | None = None
    costs: AnnotationCostConfig = AnnotationCostConfig()


class StudentConfig(_Section):
    """What the workspace's ``train:`` and a loop recipe's ``train:`` both set (the recipe's own
    defaults are a round's: ``recipe.LoopTrain``)."""

    # which student (autolabel.students.STUDENTS): yolo (ultralytics, AGPL-3.0) or dfine-n / dfine-s
    # (transformers D-FINE, Apache-2.0)
    student: Literal["yolo", "dfine-n", "dfine-s"] = "yolo"
    model: str = "yolo11n.pt"  # weights path / name in the ultralytics weights dir, or a model yaml
    epochs: int = Field(default=80, gt=0)
    imgsz: int = Field(default=640, gt=0)  # the deployment size
    batch: int = 16
    seed: int = 0
    device: str = "auto"
    val_each_epoch: bool = True  # false: validate only after the last epoch; best.pt is then the last epoch
    ema: bool = True  # D-FINE: validate and save an EMA of the weights (the YOLO student always does)


class FitConfig(StudentConfig):
    """What a single training sets and a loop round derives from its epochs instead."""

    patience: int = 20
    close_mosaic: int = 10  # mosaic off for the last N epochs
    conf: float = Field(default=0.25, ge=0, le=1)  # operating confidence of the P/R/F1 evaluation


class TrainConfig(FitConfig):
    """``autolabel.yaml``'s ``train:`` section."""

    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    eval_iou: float = Field(default=0.5, gt=0, le=1)  # P/R/F1 matching IoU in 'autolabel eval'


class TrainSettings(FitConfig):
    """What one training run takes: a YAML section's fields (``from_config``, ``from_section``)
    plus what only a run decides. Recorded as the run's params."""

    model_config = ConfigDict(frozen=True)

    workers: int = 2  # ultralytics forces 0 on CPU
    resume_from: str | None = None  # warm start: previous student's weights (a new run, not resume=True)
    deterministic: bool = True
    plots: bool = True
    warmup_epochs: float = 3.0  # LR warm-up; 0 for a warm start from an already trained student
    evaluate: bool = True  # the caller evaluates on the frozen val set after training
    iou: float = 0.5  # matching IoU of that evaluation's P/R/F1
    offline: bool = False  # never fetch missing official weights (YOLO_OFFLINE=1 does the same)

    @classmethod
    def from_section(cls, section: StudentConfig, **overrides) -> TrainSettings:
        """The fields ``section`` shares with a run, then ``overrides`` (None keeps the value)."""
        values = section.model_dump(include=set(cls.model_fields))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_config(cls, config: TrainConfig, **overrides) -> TrainSettings:
        """The workspace's ``train:`` section with CLI ``overrides`` (None keeps the file's value)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return cls.from_section(config, **{"iou": config.eval_iou, **given})


class EngineConfig(_Section):
    """Where pre-labeling, pool scoring and embeddings run (``autolabel.engines``): ``local`` (this
    process) or ``ray`` (a Ray cluster: a private local one, or ``ray_address``)."""

    kind: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # None: start a local Ray on this machine; "auto" or host:port: join
    workers: str = Field(
        default="1:", pattern=r"^\d*(:\d*)?$"
    )  # actor pool MIN:MAX ("1:" = up to one per CPU)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    batch_size: int | None = Field(default=None, gt=0)  # images per call in pool scoring/embedding (None: 8)


class WorkspaceConfig(_Section):
    version: int = 1
    images: str
    ontology: str | None = None
    grouping: GroupingConfig = GroupingConfig()
    proposer: ProposerConfig = ProposerConfig()
    studio: StudioConfig = StudioConfig()
    train: TrainConfig = TrainConfig()
    engine: EngineConfig = EngineConfig()


def load_config(path: Path) -> WorkspaceConfig:
    import yaml

    try:
        data = yaml.safe_load(read_text(path, "workspace config")) or {}
    except yaml.YAMLError as exc:
        raise AutolabelError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return WorkspaceConfig.model_validate(data)
    except ValidationError as exc:
        raise AutolabelError(f"{path}: {describe_validation_error(exc)}") from None


def save_config(config: WorkspaceConfig, path: Path) -> None:
    import yaml

    data = config.model_dump(mode="json", exclude_defaults=False)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, joined: 'proposer.box_treshold: unknown key'."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}: unknown key")
        else:
            parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
