"""A workspace: a folder with ``autolabel.yaml`` and its state (SQLite, server data, runs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autolabel.config import CONFIG_NAME, STATE_DIR, WorkspaceConfig, load_config, save_config
from autolabel.errors import AutolabelError


@dataclass(frozen=True)
class Workspace:
    root: Path
    config: WorkspaceConfig

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def log_path(self) -> Path:
        """Python warnings, library logging and unexpected tracebacks (``--verbose`` shows them)."""
        return self.state_dir / "logs" / "autolabel.log"

    @property
    def studio_dir(self) -> Path:
        return self.state_dir / "studio"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def image_root(self) -> Path:
        path = Path(self.config.images)
        return (path if path.is_absolute() else self.root / path).resolve()

    def ontology_path(self) -> Path | None:
        if not self.config.ontology:
            return None
        path = Path(self.config.ontology)
        return path if path.is_absolute() else self.root / path

    def open_store(self):
        from autolabel.store import Store

        return Store.open(self.db_path)

    def save(self) -> None:
        save_config(self.config, self.root / CONFIG_NAME)

    @classmethod
    def load(cls, root: str | Path | None = None) -> Workspace:
        root = Path(root or ".").resolve()
        config_path = root / CONFIG_NAME
        if not config_path.is_file():
            raise AutolabelError(
                f"no {CONFIG_NAME} in {root}: run 'autolabel init --images DIR' there first (or pass --workspace)"
            )
        return cls(root=root, config=load_config(config_path))

    @classmethod
    def create(cls, root: str | Path, config: WorkspaceConfig) -> Workspace:
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        ws = cls(root=root, config=config)
        ws.state_dir.mkdir(exist_ok=True)
        ws.save()
        return ws
