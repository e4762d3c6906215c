"""``--head-lr-scale X``: the layers ``--init`` restarted learn at X times the schedule's rate, the others at the rate.

A fresh head on a pretrained backbone is what makes fine-tuning into a new markup slow (docs/own-landmarks.md:
face5 from the shipped model, 5 epochs, fresh head: 9.34 % test NME at 1 x, 4.02 % with the head at 10 x). The
optimizers that do it are in ``facelandmarks.models.optimizers``; this module says which layers they speed up.

They are recorded in the run's ``config.json`` (``head_lr_layers``: layer paths, as ``--init`` names them), which
``--resume`` reads back: a resumed run scales the same layers without the ``--init`` run it started from, and its
optimizer state comes back from the checkpoint as plain Adam's would.
"""

from __future__ import annotations

import json
from pathlib import Path

from facelandmarks.training.config import _write_json_atomic

RECORD = "head_lr_layers"  # key of config.json: the layers (paths) --head-lr-scale applies to


def head_rate_layers(config, run_dir: Path, out_dir: Path, resume: bool, restarted) -> tuple[str, ...]:
    """The layers ``config.head_lr_scale`` applies to: on a new run those ``--init`` restarted (``restarted``),
    recorded in ``out_dir``'s config.json; on a resumed run those ``run_dir``'s config.json recorded. A scale other
    than 1 with no such layer is a ``ValueError`` naming why."""
    flag = f"--head-lr-scale {config.head_lr_scale:g}"
    if resume:
        layers = tuple(json.loads((Path(run_dir) / "config.json").read_text()).get(RECORD) or ())
        if config.head_lr_scale != 1 and not layers:
            raise ValueError(f"{run_dir}/config.json records no layers that {flag} applies to ({RECORD}): "
                             f"cannot resume with it")
        return layers
    layers = tuple(dict.fromkeys(restarted))
    if config.head_lr_scale != 1 and not layers:
        raise ValueError(f"{flag}: --init {config.init} restarted no layer (same point count and markup: every layer "
                         f"was kept), so there is no head to give another rate; leave --head-lr-scale at 1")
    if layers:
        path = Path(out_dir) / "config.json"
        _write_json_atomic(path, {**json.loads(path.read_text()), RECORD: list(layers)})
    return layers


def check_head_rate_layers(model, layers) -> None:
    """Every recorded layer is one of ``model``'s (a ``ValueError`` otherwise: the scale would miss it silently)."""
    known = {v.path.rsplit("/", 1)[0] for v in model.weights}
    if missing := [layer for layer in layers if layer not in known]:
        raise ValueError(f"--head-lr-scale: {model.name} has no layer {', '.join(missing)} (recorded in config.json "
                         f"as {RECORD})")
