"""Exported models run by an inference runtime (ONNX Runtime, LiteRT) instead of Keras.

An export folder (``export.py``, ``inference.export``) holds ``export.json`` and one file per
format: ``model.onnx``, ``model.tflite`` (and ``saved_model/`` for TensorFlow Serving).  The models
map raw pixels (N, S, S, C) float32 in 0..255 to (N, K, 2) normalised crop coordinates, exactly
like the Keras model they came from: the input normalisation is inside the graph.

``OnnxModel`` and ``LiteRTModel`` offer the three members ``Predictor`` uses of a Keras model
(``input_shape``, ``predict_on_batch``, ``count_params``), so one ``Predictor`` serves all
runtimes.  Nothing here imports TensorFlow, Keras or JAX: a process that loads an export and marks
photos stays free of them (tested in a subprocess).
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import numpy as np

from facelandmarks.data.fileset import file_hash
from facelandmarks.inference import packages
from facelandmarks.runtime import filtered_fds, script_command

EXPORT_FILE = "export.json"
EXPORT_DIR = "export"  # where export.py writes a run's export by default (RUN/export)
FILES = {"onnx": "model.onnx", "litert": "model.tflite", "savedmodel": "saved_model"}
FORMATS = tuple(FILES)  # what export.py writes
QUANTIZE = ("none", "float16", "int8")
CHECK_FACES = 256  # faces export.py --check compares by default
QUANTIZED = {"int8": ("onnx", "litert"), "float16": ("litert",)}  # the formats each --quantize changes (SavedModel: none)
RUNTIMES = ("onnx", "litert")  # formats this module can run, in order of preference for 'auto'
PACKAGES = {name: package for name, (_, package) in packages.RUN.items()}  # what runs each (pip; extra [onnx] ...)
METADATA_KEY = "facelandmarks"  # the export.json text, also stored inside model.onnx's metadata


_LITERT_NOISE = "INFO: Created TensorFlow Lite XNNPACK delegate"
# ONNX Runtime session setting for x86 CPUs without VNNI: turn the int8 exports' signed weights into
# unsigned ones while loading (exactly: w + 128, the zero point moved alike), because its u8 x s8 kernels
# there add byte-product pairs into saturating 16-bit sums.  ONNX Runtime would apply it on VNNI CPUs too,
# whose u8 x s8 is exact and 1.6-1.8x faster than u8 x u8, so ``onnx_settings`` sets it only where it is needed
PRECISE_INT8 = {"session.x64quantprecision": "1"}
X86 = ("x86_64", "amd64", "i386", "i686", "x86")


class ExportError(ValueError):
    """An export folder or file that cannot be used; the message names it."""


def is_export(path) -> bool:
    """True for an export folder (``export.json``) or a ``.onnx`` / ``.tflite`` file."""
    path = Path(path)
    return (path / EXPORT_FILE).is_file() if path.is_dir() else path.suffix in (".onnx", ".tflite")


def read_export(path) -> tuple[dict, Path]:
    """``(export.json's settings, the folder)`` for an export folder or one of its model files.

    A lone ``.onnx`` file carries the settings in its metadata; a ``.tflite`` file needs its folder's
    ``export.json``.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    meta_path = folder / EXPORT_FILE
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as err:
            raise ExportError(f"{meta_path}: unreadable export settings ({' '.join(str(err).split())})") from None
    elif path.suffix == ".onnx" and path.is_file():
        meta = _onnx_metadata(path)
    else:
        raise ExportError(f"{path}: not an export (no {EXPORT_FILE} beside it)")
    missing = [k for k in ("scheme", "input_shape", "num_points") if k not in meta]
    if missing:
        raise ExportError(f"{meta_path}: not the settings of an exported model (no {', '.join(missing)})")
    if not isinstance(meta.get("quantize", "none"), dict):  # format_version 1: one word for every file
        formats = meta.get("files") or (["onnx"] if path.suffix == ".onnx" and not meta_path.is_file() else FILES)
        meta["quantize"] = quantized(formats, meta.get("quantize", "none"))
    return meta, folder


def quantized(formats, quantize: str) -> dict:
    """``{format: 'none', 'float16' or 'int8'}``: what ``export.py --quantize`` makes of each of ``formats`` (int8:
    the ONNX and LiteRT files, float16: LiteRT's weights; SavedModel stays float32), as ``export.json`` records it.
    ``read_export`` reads the one word of older exports (format_version 1, "quantize": "int8") so."""
    return {fmt: quantize if fmt in QUANTIZED.get(quantize, ()) else "none" for fmt in formats}


def settings_lost(folder: Path) -> str | None:
    """The line for an export ``folder`` that lost its ``export.json`` (model files, no run's config.json), or None."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / EXPORT_FILE).is_file() or (folder / "config.json").is_file():
        return None
    onnx, tflite = folder / FILES["onnx"], folder / FILES["litert"]
    if onnx.is_file():
        return f"{folder}: an export without its {EXPORT_FILE}; give {onnx}, which carries the settings, or export again"
    if tflite.is_file():
        return f"{folder}: an export without its {EXPORT_FILE}, which {tflite.name} needs beside it; export again"
    return None


def _onnx_metadata(path: Path) -> dict:
    _require_installed("onnx", path)
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for damaged files
        raise ExportError(f"{path}: not a loadable ONNX model ({' '.join(str(err).split())[:200]})") from None
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise ExportError(f"{path}: no {METADATA_KEY} settings in its metadata (not written by export.py)")
    return json.loads(text)


def file_sha1(path: Path) -> str:
    """The SHA-1 ``export.json`` records of the weights an export came from (as ``state.json`` does)."""
    return file_hash(path, "sha1")


def stale_export(run_dir: Path, export: Path, runtime: str = "auto", tools=None) -> str | None:
    """Why ``export`` cannot stand in for ``run_dir``'s weights (missing, unreadable, or made from other weights), or
    None.

    The line says how to export, and what to pip install first: ``tools``, the extras writing needs (None: those
    export.py would ask for, ``packages.missing``), and the runtime's extra where ``runtime`` ('auto': any) is not
    installed, since an export alone would not run there either."""
    if not (export / EXPORT_FILE).is_file():
        return f"{run_dir}: not exported{how_to_export(run_dir, runtime, tools)}"
    try:
        meta, _ = read_export(export)
    except ExportError as err:  # a damaged export.json: as stale ('auto' runs Keras), not the end of the run's use
        return f"{err}{how_to_export(run_dir, runtime, tools, again=True)}"
    source = run_dir / meta.get("weights_file", "best.weights.h5")
    if not source.is_file() or file_sha1(source) != meta.get("weights_sha1"):
        return f"{export}: made from other weights than {source}{how_to_export(run_dir, runtime, tools, again=True)}"
    return None


def export_problem(run_dir: Path, runtime: str = "auto") -> str | None:
    """Why ``run_dir``'s export (``RUN/export``) cannot run in its stead, on one line with the fix, or None:
    ``stale_export``'s reasons and, for 'auto', no runtime installed for its files (then Keras runs instead)."""
    export = Path(run_dir) / EXPORT_DIR
    problem = stale_export(run_dir, export, runtime)
    if problem is None and runtime == "auto":
        try:
            choose_runtime(export, read_export(export)[0])
        except ExportError as err:
            problem = str(err)
    return problem


def how_to_export(run_dir: Path, runtime: str = "auto", tools=None, again: bool = False) -> str:
    """``' (export.py RUN)'``, with what is missing: ``', and onnxruntime is not installed to run it (export.py RUN,
    after pip install 'facelandmarks[export]' 'facelandmarks[onnx]')'``.  Where ``RUN`` is not the user's to write
    (the shipped model of a system-wide install, ``<prefix>/share/facelandmarks/weights``), the export goes
    ``--to`` a folder of the user's (``user_export_dir``), and the line says how to run it from there."""
    note, after = _lacking(runtime, packages.DEFAULT_FORMATS, tools)
    if writable(run_dir):
        return f"{note} ({script_command('export')} {shlex.quote(str(run_dir))}{' again' if again else ''}{after})"
    to = user_export_dir(run_dir)
    return (f"{note} ({script_command('export')} {shlex.quote(str(run_dir))} --to {shlex.quote(str(to))}{after}: its own "
            f"folder is not writable here; then Predictor.load({str(to)!r}) or {script_command('evaluate')} "
            f"{shlex.quote(str(to))} --image PHOTO runs it)")


def _lacking(runtime: str, formats, tools=None) -> tuple[str, str]:
    """``(', and onnxruntime is not installed to run it', ", after pip install 'facelandmarks[export]' ...")`` for an
    export of ``formats`` to be run by ``runtime`` ('auto': any): the extras writing it needs (``tools``: these
    instead) and the runtime's, where missing; empty texts for what is installed."""
    if tools is None:
        tools = sorted(set(packages.missing(formats).values()))
    lacking = runtime if runtime in RUNTIMES and not _installed(runtime) else None
    note = f", and {PACKAGES[lacking]} is not installed to run it" if lacking else ""
    if runtime == "auto" and not any(map(_installed, RUNTIMES)):
        lacking, note = "onnx", f", and neither {' nor '.join(PACKAGES.values())} is installed to run it"
    extras = list(dict.fromkeys([*tools, *([lacking] if lacking else [])]))
    after = ", after pip install " + " ".join(f"'facelandmarks[{x}]'" for x in extras) if extras else ""
    return note, after


def writable(folder: Path) -> bool:
    """Whether this user may write an export into ``folder`` (export.py writes ``RUN/export`` beside it)."""
    return not Path(folder).is_dir() or os.access(folder, os.W_OK)


def user_export_dir(run_dir: Path) -> Path:
    """A folder of the user's for an export of ``run_dir``: ``$XDG_DATA_HOME/facelandmarks/exports/NAME``
    (``~/.local/share/...`` without the variable)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "facelandmarks" / "exports" / Path(run_dir).name


def choose_runtime(folder: Path, meta: dict, runtime: str = "auto", path: Path | None = None) -> tuple[str, Path]:
    """The runtime and model file to use: the one ``path`` names, else ``runtime``'s file, else ('auto')
    the first of ``RUNTIMES`` whose file exists and whose Python package is installed."""
    if path is not None and path.is_file():
        theirs = {".onnx": "onnx", ".tflite": "litert"}[path.suffix]
        if runtime not in ("auto", theirs):
            names = {"onnx": "ONNX Runtime", "litert": "LiteRT", "keras": "Keras"}
            raise ExportError(f"{path}: a model for {names[theirs]}, not {names.get(runtime, runtime)} (give its "
                              f"folder to choose the runtime)")
        _require_installed(theirs, path)
        return theirs, path
    files = meta.get("files", FILES)
    if runtime != "auto":
        if runtime not in RUNTIMES:
            raise ExportError(f"runtime must be auto or one of {', '.join(RUNTIMES)}, got {runtime!r}")
        file = folder / files.get(runtime, FILES[runtime])
        if not file.is_file():
            raise _no_export_here(folder, files, runtime)
        _require_installed(runtime, file)
        return runtime, file
    there = [name for name in RUNTIMES if (folder / files.get(name, FILES[name])).is_file()]
    for name in there:
        if _installed(name):
            return name, folder / files.get(name, FILES[name])
    if not there:  # a SavedModel alone: an export in a format a runtime here runs (ONNX where none is)
        raise _no_export_here(folder, files, next((name for name in RUNTIMES if _installed(name)), RUNTIMES[0]))
    names = [PACKAGES[name] for name in there]
    who = f"{names[0]} is not installed" if len(names) == 1 else f"neither {' nor '.join(names)} is installed"
    extras = ", or ".join(f"'facelandmarks[{name}]'" for name in there)
    raise ExportError(f"{folder}: {who} to run it (pip install {extras})")


def _no_export_here(folder: Path, files: dict, runtime: str) -> ExportError:
    """The error for an export ``folder`` of ``files`` without ``runtime``'s file: how to export it, with what is
    missing to write and run it."""
    # the command names the run (export.py alone exports the shipped model) and the formats already there (an
    # export replaces the folder: '--format litert' took the ONNX file away)
    root = next((p for p in (folder.parent, folder.parent.parent) if (p / "pipeline.json").is_file()), folder)
    run = root.parent if root.name == EXPORT_DIR else None  # a pipeline's stages are exported with it
    formats = list(dict.fromkeys([*files, runtime]))
    note, after = _lacking(runtime, formats)
    command = f"{script_command('export')} {shlex.quote(str(run)) if run else 'RUN'} --format {' '.join(formats)}"
    to = '' if run else f' --to {shlex.quote(str(root))}'
    return ExportError(f"{folder}: no {runtime} export here{note} ({command}{to}{after})")


def _require_installed(runtime: str, file: Path) -> None:
    """An ``ExportError`` (one line) when ``runtime``, asked for by name or by the file given, is not installed."""
    if not _installed(runtime):
        raise ExportError(f"{file}: {PACKAGES[runtime]} is not installed to run it (pip install 'facelandmarks[{runtime}]')")


def _installed(runtime: str) -> bool:
    return packages.installed(packages.RUN[runtime][0])


def load_model(path, runtime: str = "auto", threads: int | None = None):
    """``(model, settings)`` for an export folder or file, run by ``runtime`` on ``threads`` CPU threads
    (None: all cores)."""
    path = Path(path)
    meta, folder = read_export(path)
    runtime, file = choose_runtime(folder, meta, runtime, path if path.is_file() else None)
    if meta.get("scheme_definition"):  # a scheme of your own: get_scheme finds it from here on
        from facelandmarks.scheme_files import register_definition

        register_definition(meta["scheme_definition"], f"{folder / EXPORT_FILE} (scheme_definition)")
    cls = OnnxModel if runtime == "onnx" else LiteRTModel
    model = cls(file, tuple(meta["input_shape"]), meta.get("params", 0), threads)
    model.quantize = meta["quantize"].get(runtime, "none")
    model.check_settings(meta, folder / EXPORT_FILE if (folder / EXPORT_FILE).is_file() else file)
    return model, meta


class _ExportedModel:
    """What ``Predictor`` needs of a model: ``input_shape``, ``predict_on_batch``, ``count_params``."""

    runtime = ""
    quantize = "none"  # what export.py --quantize made of the file (export.json's "quantize"): float16, int8

    def __init__(self, path: Path, input_shape: tuple, params: int, threads: int | None):
        if threads is not None and threads < 1:  # LiteRT blamed the model file for it, ONNX Runtime took it silently
            raise ValueError(f"threads must be at least 1 (default: all cores), got {threads}")
        self.path = Path(path)
        self.input_shape = (None, *input_shape)
        self.params = int(params)
        self.threads = threads or os.cpu_count() or 1

    def count_params(self) -> int:
        return self.params

    def file_shapes(self) -> tuple[list, list]:
        """The model file's input and output shapes (a dimension it leaves open: not an int)."""
        raise NotImplementedError

    def check_settings(self, meta: dict, source: Path) -> None:
        """An ``ExportError`` where the file takes other crops or gives other points than ``meta`` (read from
        ``source``) says: files of two exports in one folder (the runtimes failed on the first face, in their words)."""
        inputs, outputs = self.file_shapes()
        found = [*inputs[1:4], outputs[1] if len(outputs) == 3 else None]
        said = [*meta["input_shape"], meta["num_points"]]
        if any(isinstance(f, int) and f != int(s) for f, s in zip(found, said)):
            shape, points = "x".join(str(d) for d in inputs[1:]), found[-1]
            gives = f" and gives {points} points" if isinstance(points, int) else ""
            raise ExportError(f"{self.path}: takes {shape} crops{gives}, {source} says "
                              f"{'x'.join(map(str, meta['input_shape']))} and {meta['num_points']}: files of two "
                              f"exports (export again)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, threads={self.threads}, quantize={self.quantize!r})"


class OnnxModel(_ExportedModel):
    """A ``model.onnx`` run by ONNX Runtime on the CPU."""

    runtime = "onnx"

    def __init__(self, path, input_shape, params=0, threads=None):
        super().__init__(path, input_shape, params, threads)
        self.session = onnx_session(self.path, self.threads)
        self.input_name = self.session.get_inputs()[0].name

    def file_shapes(self) -> tuple[list, list]:
        return list(self.session.get_inputs()[0].shape), list(self.session.get_outputs()[0].shape)

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})[0]


def int8_products_saturate(machine: str | None = None, flags: set | None = None) -> bool:
    """Whether ONNX Runtime's u8 x s8 kernels saturate on this CPU (or on ``machine`` with the
    /proc/cpuinfo ``flags`` given): x86 without VNNI (AVX-512 VNNI or AVX-VNNI).  Where Linux lists no
    flags, NumPy's CPU detection stands in; a CPU about which nothing is known counts as saturating,
    which costs speed, never accuracy."""
    import platform

    if (machine or platform.machine()).lower() not in X86:
        return False  # ARM's dot-product instructions add in 32 bits
    if flags is None:
        from facelandmarks.machine import cpu_flags

        flags = cpu_flags()[1]
        if not flags:
            try:
                from numpy._core._multiarray_umath import __cpu_features__ as features
            except ImportError:  # NumPy 1.x
                from numpy.core._multiarray_umath import __cpu_features__ as features
            flags = {"avx512_vnni"} if features.get("AVX512VNNI") else set()
    return not {"avx512_vnni", "avx_vnni"} & set(flags)


def onnx_settings() -> dict:
    """Session settings ``onnx_session`` gives ONNX Runtime on this CPU: ``PRECISE_INT8`` where int8
    products would saturate, else none."""
    return dict(PRECISE_INT8) if int8_products_saturate() else {}


def onnx_session(path, threads: int):
    """An ONNX Runtime session for ``path`` on the CPU, ``threads`` threads, with ``onnx_settings()``
    (int8 exports exact on CPUs without VNNI and at full speed on those with it: docs/inference.md)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    for key, value in onnx_settings().items():
        options.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for damaged files
        raise ExportError(f"{path}: not a loadable ONNX model ({' '.join(str(err).split())[:200]})") from None


class LiteRTModel(_ExportedModel):
    """A ``model.tflite`` run by LiteRT's interpreter (XNNPACK on the CPU); resized per batch size."""

    runtime = "litert"

    def __init__(self, path, input_shape, params=0, threads=None):
        super().__init__(path, input_shape, params, threads)
        from ai_edge_litert.interpreter import Interpreter

        try:
            with filtered_fds((2,), keep=lambda line: not line.startswith(_LITERT_NOISE)):
                self.interpreter = Interpreter(model_path=str(self.path), num_threads=self.threads)
                self.interpreter.allocate_tensors()  # XNNPACK announces itself here
        except ValueError as err:
            raise ExportError(f"{self.path}: not a loadable LiteRT model ({' '.join(str(err).split())[:200]})") from None
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self._batch = None

    def file_shapes(self) -> tuple[list, list]:
        return ([int(d) for d in self.interpreter.get_input_details()[0]["shape"]],
                [int(d) for d in self.interpreter.get_output_details()[0]["shape"]])

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, np.float32)
        if batch.shape[0] != self._batch:
            self.interpreter.resize_tensor_input(self.input_index, list(batch.shape))
            self.interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self.interpreter.set_tensor(self.input_index, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output_index).copy()
