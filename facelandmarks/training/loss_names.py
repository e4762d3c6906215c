"""The names ``train.py --loss`` takes, and the model families of your own, for its flag parser, which runs without
Keras.

The losses are registered in one place, ``LOSSES`` in ``facelandmarks/models/losses.py`` (docs/models.md,
"Adding a loss"), a module that imports Keras.  ``--help`` lists them without loading it: from that
dictionary once the module is loaded (a loss registered from Python counts), else from the module's
source, read as text (a few milliseconds; importing Keras takes seconds). The families registered outside the
package (``--plugins``) are known once the model registry is loaded (``train.py`` loads the plugins before it builds
its parser), none before.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MODULE = "facelandmarks.models.losses"


SOURCE = Path(__file__).resolve().parents[1] / "models" / "losses.py"
REGISTRY_MODULE = "facelandmarks.models.registry"  # the model families, for own_families


def loss_names() -> tuple[str, ...]:
    """The keys of ``LOSSES``, in its order; () where its source cannot be read."""
    module = sys.modules.get(MODULE)
    if module is not None and hasattr(module, "LOSSES"):
        return tuple(module.LOSSES)
    try:
        return names_in_source(SOURCE.read_text())
    except (OSError, SyntaxError, ValueError):
        return ()


def own_families() -> tuple[str, ...]:
    """The model families registered by modules outside the package (plugins), in registration order; () while the
    registry is not loaded."""
    module = sys.modules.get(REGISTRY_MODULE)
    registry = getattr(module, "REGISTRY", {})
    return tuple(name for name, spec in registry.items()
                 if not getattr(spec.builder, "__module__", "").startswith("facelandmarks."))


def names_in_source(text: str) -> tuple[str, ...]:
    """The names a module's source registers in ``LOSSES``: the keys of its ``LOSSES = {...}`` and of any
    ``LOSSES["name"] = ...`` after it, at the top level."""
    names: dict[str, None] = {}
    for node in ast.parse(text).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id == "LOSSES" and isinstance(node.value, ast.Dict):
                names = {key.value: None for key in node.value.keys if isinstance(key, ast.Constant)}
            elif (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name) and target.value.id == "LOSSES"
                  and isinstance(target.slice, ast.Constant)):
                names[target.slice.value] = None
    return tuple(name for name in names if isinstance(name, str))
