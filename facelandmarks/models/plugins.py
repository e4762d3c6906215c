"""Model families and losses from your own Python file or module, without a copy of the package to edit.

A plugin is a ``.py`` file (a path: it ends in ``.py`` or holds a ``/``) or an importable module name (``my_lab.models``).
Importing it registers what it defines, as the package's own modules do: ``register(ModelSpec(...))`` for a family,
``losses.register_loss(name, cls)`` for a loss (docs/models.md, "Adding a model family", "Adding a loss").
``train.py --plugins A,B`` loads them before it checks the model and the loss and records them in the run's
``config.json``, so ``--resume``, ``evaluate.py``, ``export.py``, ``Predictor.load`` and ``--init`` load them again
(``training.runs.read_run_config``); ``models.py --plugins`` lists them. ``FACELANDMARKS_PLUGINS`` (names separated
by commas) adds plugins to every script; a new run records them too, and for a run read back it stands in for a
recorded file that is not there (``load_run_plugins``).

Each plugin is imported once per process (a second ``load_plugins`` of the same file or module, a module's file
named by its path included, does nothing). A plugin that is not there, fails to import or takes a name registered
already is a ``PluginError``: one line naming the plugin and the problem, and whatever the plugin had registered
before it failed is taken out again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

from facelandmarks.models import losses, registry
from facelandmarks.runtime import PLUGINS_ENV, env_plugins, note

ENV = PLUGINS_ENV

_LOADED: dict[str, object] = {}  # the plugins imported in this process: resolved path or module name -> module


class PluginError(ValueError):
    """A plugin that cannot be used; the message is one line naming it."""


def with_env_plugins(plugins) -> list[str]:
    """``plugins`` followed by those of ``FACELANDMARKS_PLUGINS`` not among them: what a new run records."""
    given = list(plugins or ())
    return given + [p for p in env_plugins() if p not in given]


def is_file(plugin: str) -> bool:
    """A plugin given as a file (``my_models.py``, ``lab/models``) rather than a module name (``my_lab.models``)."""
    return plugin.endswith(".py") or "/" in plugin or os.sep in plugin


def load_plugins(plugins, where: str = "--plugins") -> list[str]:
    """Import ``plugins`` (then ``FACELANDMARKS_PLUGINS``'s) once each; ``where``: what named them, for the line.

    Returns:
        The names of the model families and losses they registered (this call's new ones).
    """
    added = []
    for plugin in plugins or ():
        added += load_plugin(str(plugin), where)
    for plugin in env_plugins():
        added += load_plugin(plugin, ENV)
    return added


def load_run_plugins(recorded, where: str, model: str | None = None, loss: str | None = None) -> list[str]:
    """A run's recorded plugins, then ``FACELANDMARKS_PLUGINS``' (``load_plugins``). A recorded file that is not there
    (a relative path read from another folder, a plugin that moved) is left to the variable, which names where the
    run's plugins are now, and is no error where the run needs nothing of it: its ``model`` and ``loss`` are
    registered without it (a run of a built-in family trained while the variable named a plugin, which the run then
    recorded: a note on stderr says so). Otherwise it is refused as ``load_plugins`` would."""
    absent = absent_files(recorded)
    added = load_plugins([p for p in recorded or () if p not in absent], where)
    if not absent:
        return added
    unknown = [f"model {model!r}"] if model is None or model not in registry.REGISTRY else []
    unknown += [f"loss {loss!r}"] if loss is not None and loss not in losses.LOSSES else []
    if unknown:
        if env_plugins():
            raise PluginError(f"{absent[0]}: no such plugin file ({where}), and {ENV}'s plugins register no "
                              f"{' and no '.join(unknown)}")
        load_plugins(absent[:1], where)  # its line: no such plugin file
    elif not env_plugins():  # (where the variable is set, it named where they are now)
        needs = f"model {model!r}" + (f" and loss {loss!r}" if loss is not None else "")
        note(f"{absent[0]}: no such plugin file ({where}); the run's {needs} {'are' if loss is not None else 'is'} "
             "registered without it")
    return added


def plugins_here(recorded) -> list[str]:
    """A run's recorded plugins as ``load_run_plugins`` finds them here: a recorded file that is not there left out
    (``FACELANDMARKS_PLUGINS`` stands in for it), then the variable's. What a run that found a recorded file
    elsewhere records, and the parts a resumed run trains anew (a pipeline's refiner not started before it stopped); a
    new run's typed plugins are loaded as given, strictly, those read from a file as a run's (``load_plugins_for_run``)."""
    absent = absent_files(recorded)
    return with_env_plugins([str(p) for p in recorded or () if p not in absent])


def absent_files(recorded) -> list:
    """The files among a run's recorded plugins that are not there (module names are looked for when imported)."""
    return [p for p in recorded or () if is_file(str(p)) and not Path(p).is_file()]


def load_plugin(plugin: str, where: str = "--plugins") -> list[str]:
    """Import one plugin (once per process); the names it registered, or ``PluginError``."""
    families, table = dict(registry.REGISTRY), dict(losses.LOSSES)
    key = None
    try:
        key = _key(plugin, where)
        if key in _LOADED:
            return []
        _LOADED[key] = _import(plugin, key, where)
        replaced = [f"model {name!r}" for name, spec in families.items() if registry.REGISTRY.get(name) is not spec]
        replaced += [f"loss {name!r}" for name, cls in table.items() if losses.LOSSES.get(name) is not cls]
        if replaced:
            raise PluginError(f"{plugin}: replaces {', '.join(replaced)}, registered already; give yours another name "
                              f"({where})")
    except BaseException:
        _LOADED.pop(key, None)
        _restore(registry.REGISTRY, families)
        _restore(losses.LOSSES, table)
        raise
    return ([name for name in registry.REGISTRY if name not in families]
            + [name for name in losses.LOSSES if name not in table])


def _restore(table: dict, saved: dict) -> None:
    table.clear()
    table.update(saved)


def _key(plugin: str, where: str) -> str:
    """What a plugin is in ``_LOADED``: its file, resolved (a module's too, so that a module and its file named by
    path are one plugin, imported once), else a module's name."""
    if is_file(plugin):
        return str(Path(plugin).resolve())
    origin = _find_module(plugin, where).origin
    return str(Path(origin).resolve()) if origin and Path(origin).is_file() else plugin


def _find_module(plugin: str, where: str):
    """The spec of the module ``plugin`` names, or ``PluginError``."""
    try:
        found = importlib.util.find_spec(plugin)  # imports the packages on the way (lab of lab.models)
    except (ImportError, ValueError):
        found = None
    except Exception as err:  # a package on the way failed to import: the line names its file
        raise _failed(plugin, err, where, None) from None
    if found is None:
        raise PluginError(f"{plugin}: no such module to import ({where}: a .py file, or a module on the Python path)")
    return found


def _import(plugin: str, key: str, where: str):
    if is_file(plugin):
        path = Path(plugin)
        if not path.is_file():
            problem = "a folder, not a .py file" if path.is_dir() else "no such plugin file"
            raise PluginError(f"{plugin}: {problem} ({where})")
        name = f"{registry.PLUGIN_MODULE_PREFIX}{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"{plugin}: not a Python file Python can import ({where})")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # as an import does: dataclasses and pickling look the module up
        try:
            spec.loader.exec_module(module)
        except BaseException as err:
            sys.modules.pop(name, None)
            raise _failed(plugin, err, where, path) from None
        return module
    found = _find_module(plugin, where)
    try:
        return importlib.import_module(plugin)
    except BaseException as err:
        raise _failed(plugin, err, where, Path(found.origin or plugin)) from None


def _failed(plugin: str, err: BaseException, where: str, path: Path | None) -> BaseException:
    """The line for a plugin whose import raised ``err``: a name taken says so; anything else is named with the line
    of the plugin's file ``path`` that raised it (None: the file and line where it was raised). Ctrl-C and exits go
    on as they were."""
    if not isinstance(err, Exception):
        return err
    if isinstance(err, registry.NameTaken):
        return PluginError(f"{plugin}: {err} ({where})")
    message = " ".join(str(err).split())
    at = ""
    if isinstance(err, SyntaxError) and err.lineno:
        at, message = f", line {err.lineno}", err.msg
    elif path is None:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<")]
        if frames:
            at = f", {frames[-1].filename}, line {frames[-1].lineno}"
    else:
        frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == path.resolve()]
        if frames:
            at = f", line {frames[-1].lineno}"
    return PluginError(f"{plugin}: the plugin failed to import ({where}){at}: {type(err).__name__}"
                       + (f": {message}" if message else ""))
