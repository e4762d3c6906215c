"""``--head-lr-scale X``: the layers ``--init`` restarted learn at X times the schedule's rate, the others at the rate.

A fresh head on a pretrained backbone is what makes fine-tuning into a new markup slow (docs/own-landmarks.md:
face5 from the shipped model, 5 epochs, fresh head: 9.34 % test NME at 1 x, 4.02 % with the head at 10 x). The
optimizers that do it are in ``facelandmarks.models.optimizers``; this module says which layers they speed up.

They are recorded in the run's ``config.json`` (``head_lr_layers``: layer paths, as ``--init`` names them), which
``--resume`` reads back: a resumed run scales the same layers without the ``--init`` run it started from, and its
optimizer state comes back from the checkpoint as plain Adam's would.  Where the default chose the scale,
``head_lr_scale_default`` records its choice beside it, so the file as a ``--config`` leaves the choice to the
default again (``config.read_config_file``): the same ``--init`` and data choose the same, and other ones (the run's
settings reused for another markup, or with an ``--init`` added) choose what the default chooses for them instead
of being refused or held to the first run's choice.
"""

from __future__ import annotations

import json
from pathlib import Path

from facelandmarks.training.config import HEAD_LR_SCALE_DEFAULT_RECORD as DEFAULT_RECORD
from facelandmarks.training.config import HEAD_LR_SCALE_NEW_MARKUP, _write_json_atomic

RECORD = "head_lr_layers"  # key of config.json: the layers (paths) --head-lr-scale applies to


def settle_head_lr_scale(config, resume: bool, restarted, fresh_points: bool) -> str | None:
    """Fill in ``config.head_lr_scale`` where it was not given (None). On a new run ``HEAD_LR_SCALE_NEW_MARKUP`` where
    ``--init`` restarted the head (``restarted``, its layers) for another markup and points start there from random
    weights (``fresh_points``: every point with ``--init-head fresh``, those ``nearest`` found nowhere), else 1: no
    --init, the same markup, every point copied by ``nearest`` (where the faster head cost a little: face5, 2.87
    against 2.81 %), a run of another model (not measured). On a resumed run 1: a new run records the value it
    settled on, so only runs from before the default lack it. Returns the line saying so where the default speeds
    the head up, else None."""
    if config.head_lr_scale is not None:
        return None
    layers = tuple(dict.fromkeys(restarted))
    config.head_lr_scale = HEAD_LR_SCALE_NEW_MARKUP if fresh_points and layers and not resume else 1.0
    if config.head_lr_scale == 1:
        return None
    return (f"--head-lr-scale {config.head_lr_scale:g} (the default where points of another markup start fresh): "
            f"{', '.join(layers)} learn at {config.head_lr_scale:g} x the schedule's rate, every other layer at the "
            f"rate (--head-lr-scale 1: one rate for all)")


def head_rate_layers(config, run_dir: Path, out_dir: Path, resume: bool, restarted, defaulted: bool) -> tuple[str, ...]:
    """The layers ``config.head_lr_scale`` applies to: on a new run those ``--init`` restarted (``restarted``),
    recorded in ``out_dir``'s config.json; on a resumed run those ``run_dir``'s config.json recorded. A scale other
    than 1 with no such layer is a ``ValueError`` naming why. ``config.head_lr_scale`` is settled by then
    (``settle_head_lr_scale``; ``defaulted``: by the default); a new run records it beside the layers, so ``--resume``
    keeps the rate the default chose, and where the default chose it (``DEFAULT_RECORD``) a ``--config`` of the run's
    ``config.json`` lets the default choose again."""
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
    path = Path(out_dir) / "config.json"
    _write_json_atomic(path, {**json.loads(path.read_text()), "head_lr_scale": config.head_lr_scale,
                              **({DEFAULT_RECORD: config.head_lr_scale} if defaulted else {}),
                              **({RECORD: list(layers)} if layers else {})})
    return layers


def check_head_rate_layers(model, layers) -> None:
    """Every recorded layer is one of ``model``'s (a ``ValueError`` otherwise: the scale would miss it silently)."""
    known = {v.path.rsplit("/", 1)[0] for v in model.weights}
    if missing := [layer for layer in layers if layer not in known]:
        raise ValueError(f"--head-lr-scale: {model.name} has no layer {', '.join(missing)} (recorded in config.json "
                         f"as {RECORD})")
