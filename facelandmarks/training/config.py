"""The settings of a training run, declared once: the CLI, config files and ``config.json`` derive from ``TrainConfig``."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

OPTIMIZERS = ("adam", "nadam", "rmsprop", "sgd", "adamw")


SCHEDULES = ("plateau", "cosine", "constant")


@dataclass
class TrainConfig:
    """Every setting of a training run; saved as ``config.json`` in the run directory."""

    model: str
    data: str
    run_dir: str
    val: str | None = None
    val_fraction: float = 0.1
    size: int | None = None
    epochs: int = 100
    batch: int = 32
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "plateau"
    loss: str = "mse"
    loss_options: dict = field(default_factory=dict)
    weights: str = "none"
    train_blocks: int | None = None
    model_options: dict = field(default_factory=dict)
    augment: str = "default"
    seed: int = 0
    mixed_precision: bool = False
    patience: int = 15
    min_delta: float = 1e-4  # smallest val-loss drop that counts as an improvement (early stopping and plateau)
    preview_every: int = 5
    pretrain_epochs: int = 10
    workers: int = 1
    distribute: str = "none"
    jit_compile: str = "auto"
    init: str | None = None  # a run directory or .weights.h5 of the same model to start from
    # filled in from the data when the run starts
    scheme: str | None = None
    num_points: int | None = None
    input_shape: list | None = None
    input_kind: str | None = None

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.epochs < 1 or self.batch < 1:
            raise ValueError(f"--epochs and --batch must be >= 1, got {self.epochs} and {self.batch}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if self.patience < 1 or not self.min_delta >= 0:
            raise ValueError(f"--patience must be >= 1 and --min-delta >= 0, got {self.patience} and {self.min_delta}")
        if self.jit_compile not in JIT_MODES:
            raise ValueError(f"--jit-compile must be one of {', '.join(JIT_MODES)}, got {self.jit_compile!r}")

    def save(self, path: Path) -> None:
        _write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read run config ({err})") from err
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _write_json_atomic(path: Path, values) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


JIT_MODES = ("auto", "on", "off")
