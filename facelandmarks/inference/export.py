"""A trained run (or the shipped model) written for inference runtimes: ONNX, LiteRT, SavedModel.

``export_run(RUN)`` writes the folder ``RUN/export`` (or ``dest``): ``model.onnx`` (its metadata
holds the settings too, so the file alone is enough), ``model.tflite``, ``saved_model/`` and
``export.json`` -- scheme, input shape, what the input and output mean, what ``quantize`` made of
each format (``{"onnx": "int8", "litert": "int8", "savedmodel": "none"}``), the SHA-1 of the weights
it came from (``Predictor.load(RUN, runtime='auto')`` ignores an export of older weights) and,
with ``check``, how far each runtime's points lie from the Keras model's on real faces.  A
coarse-to-fine pipeline exports each stage into a folder of the same layout as its run.  Each model's export keeps
its run's history.csv (the losses and learning curve of evaluation tables).

Writing needs TensorFlow (Keras's exporters use its converters); running the export does not
(``inference.runtimes``).  The folder is written beside the destination and moved into place, so
an interrupted export leaves the previous one intact.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from facelandmarks.files import write_json_whole
from facelandmarks.inference import packages, runtimes, swap
from facelandmarks.inference.predictor import Predictor
from facelandmarks.inference.shipped import WEIGHTS_FILE as BEST
from facelandmarks.inference.shipped import default_model_dir

FORMATS, QUANTIZE, CHECK_FACES = runtimes.FORMATS, runtimes.QUANTIZE, runtimes.CHECK_FACES
INPUT_DOC = "raw pixels, float32 (N, S, S, C) in 0..255, RGB (C=3) or gray (C=1): a face crop (inference.photos)"
OUTPUT_DOC = "(N, K, 2) landmark x, y as fractions of the crop's width and height"
HISTORY = "history.csv"  # a run's training history, which its export keeps (evaluation tables)
ONNX_INT8_DOC = ("on x86 CPUs without VNNI (no avx512_vnni or avx_vnni flag), where ONNX Runtime's int8 products "
                 "saturate otherwise; leave them out on other CPUs, where they only cost speed (Predictor decides so)")


def export_run(run_dir, dest=None, formats=packages.DEFAULT_FORMATS, quantize: str = "none", check=None,
               check_faces: int = CHECK_FACES, calibration=None) -> Path:
    """Export ``run_dir`` (None: the shipped model) into ``dest`` (None: ``run_dir/export``); returns ``dest``.

    Args:
        formats: any of ``FORMATS``.
        quantize: 'float16' stores LiteRT's weights as float16 (half the file; ONNX stays float32:
            ONNX Runtime's CPU kernels are float32); 'int8' runs the convolutions in 8-bit integers
            in both runtimes, calibrated on ``calibration`` (a prepared npz of training faces;
            ``inference.quantize``).
        check: a test npz: the first ``check_faces`` faces go through Keras and every exported
            runtime; the largest point difference (crop pixels) and each NME land in export.json.
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be among {', '.join(FORMATS)}, got {', '.join(unknown) or 'none'}")
    formats = tuple(dict.fromkeys(formats))  # each once, in the order given (--format onnx onnx converted it twice)
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if (quantize == "int8") != (calibration is not None):
        raise ValueError("--quantize int8 needs --calibration NPZ (training faces), and --calibration needs it")
    if check_faces < 1:
        raise ValueError(f"--check-faces must be at least 1, got {check_faces}")
    _check_applies(formats, quantize, check)
    for flag, path in (("--check", check), ("--calibration", calibration)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such dataset file ({flag})")
    if calibration is not None:
        _check_calibration(calibration)
    run_dir = Path(run_dir) if run_dir is not None else default_model_dir()
    if run_dir.is_file():  # its line was '<file>/export: cannot write there, <file> is a file (--to)', no --to given
        what = "an export, which ONNX Runtime or LiteRT runs" if runtimes.is_export(run_dir) else "a file"
        raise ValueError(f"{run_dir}: {what}, not a run directory: give the folder train.py wrote")
    dest = Path(dest) if dest is not None else run_dir / runtimes.EXPORT_DIR
    missing = packages.missing(formats, quantize, check is not None)  # export.py's and the hints' one table
    if missing:  # before the model loads and a partial export is written, not after
        extras = " ".join(sorted({f"'facelandmarks[{extra}]'" for extra in missing.values()}))
        raise ModuleNotFoundError(f"writing {' and '.join(formats)}{' and checking it' if check is not None else ''} "
                                  f"needs {', '.join(missing)}, not installed: pip install {extras}")
    _check_destination(dest, run_dir)
    dest = dest.resolve()
    predictor = Predictor.load(run_dir, runtime="keras")  # an export is refused: the run it came from exports
    if predictor.runtime != "keras":  # a loader of another kind that let an export through
        raise ValueError(f"{run_dir}: already an export; give the run directory it came from")
    if check is not None and getattr(predictor, "stages", None) is not None:  # it was ignored in silence
        raise ValueError(f"--check: {run_dir} is a pipeline, and --check compares one model's export with Keras; "
                         "score the exported pipeline with evaluate.py FOLDER --data NPZ")
    from facelandmarks.data.npz import MANIFEST_SUFFIX, is_manifest, load_npz, read_member, shard_path

    for flag, path in (("--check", check), ("--calibration", calibration)):
        if path is not None and is_manifest(path):  # "no readable 'scheme' array (... pickled ...)", "not an npz file"
            first = shard_path(str(path)[: -len(MANIFEST_SUFFIX)], 0).name
            raise ValueError(f"{path}: a shard set; {flag} reads one npz file: give one of its shards ({first} ...)")
    check_arrays = None
    if check is not None:  # read whole now: a file without faces failed only once every format was written
        if (scheme := str(read_member(check, "scheme"))) != predictor.scheme.name:
            raise ValueError(f"{check}: its faces have {scheme} points, {run_dir} predicts {predictor.scheme.name} "
                             "(--check)")
        check_arrays = load_npz(check)
    stages = getattr(predictor, "stages", None)
    if line := swap.recover(dest, "an export"):  # put back an export a kill had moved aside, clear the rest
        print(line)
    work = swap.work_folder(dest)
    try:
        if stages is None:
            _export_model(predictor, run_dir, work, formats, quantize, calibration)
            if check is not None:
                _check(work, predictor, check, check_faces, check_arrays)
        else:
            _export_pipeline(predictor, run_dir, work, formats, quantize, calibration)
    except BaseException:  # a failed or interrupted export leaves nothing of itself behind
        shutil.rmtree(work, ignore_errors=True)
        raise
    swap.replace_folder(work, dest)  # at every moment dest holds the old export or the new one, each whole
    print(f"exported -> {dest}")
    return dest


def _check_applies(formats, quantize: str, check) -> None:
    """A ``quantize`` or ``check`` that none of ``formats`` would carry out is refused (export.json said 'int8' of a
    float32 SavedModel, and --check compared nothing)."""
    runnable = [fmt for fmt in formats if fmt in runtimes.RUNTIMES]
    wrote = f"--format {' '.join(formats)} writes"
    if quantize == "float16" and "litert" not in formats:
        raise ValueError(f"--quantize float16 stores LiteRT's weights as float16, and {wrote} no LiteRT file (ONNX "
                         "and SavedModel stay float32): add litert to --format")
    if quantize == "int8" and not runnable:
        raise ValueError(f"--quantize int8 quantizes the ONNX and LiteRT files, and {wrote} neither: add onnx or "
                         "litert to --format")
    if check is not None and not runnable:
        raise ValueError(f"--check compares ONNX Runtime and LiteRT with Keras, and {wrote} no file either runs: add "
                         "onnx or litert to --format")


def _check_calibration(path) -> None:
    """A ``--calibration`` file the int8 conversion cannot read faces from fails now, in one line, not with a
    traceback ('KeyError: images') once the model had loaded (bottleneck features: no images)."""
    from facelandmarks.data.errors import DatasetError
    from facelandmarks.data.npz import is_manifest, read_member

    if is_manifest(path):
        return  # export_run names the shards to give
    read_member(path, "scheme")  # not an npz, unreadable: one line naming it
    with np.load(path, allow_pickle=False) as data:
        if "images" not in data.files:
            raise DatasetError(f"{path}: no face images to calibrate int8 on (--calibration takes a prepared npz of "
                               "training faces, not bottleneck features)")


def _check_destination(dest: Path, run_dir: Path) -> None:
    """An export replaces only an earlier export: never the run, a folder above it, or anything else."""
    above = dest.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():  # it said '.../afile/.export.partial: Not a directory', a path the user never gave
        raise ValueError(f"{dest}: cannot write there, {above} is a file (--to)")
    target, run = dest.resolve(), run_dir.resolve()
    if target == run or target in run.parents:
        raise ValueError(f"{dest}: the run's own folder{'' if target == run else ' or one above it'}; "
                         f"an export replaces what is there (--to)")
    if not target.exists():
        return
    earlier = target.is_dir() and ((target / runtimes.EXPORT_FILE).is_file() or (target / "pipeline.json").is_file()
                                   and (target / "stage1" / runtimes.EXPORT_FILE).is_file())
    if not earlier:
        raise ValueError(f"{dest}: exists and is not an earlier export (no {runtimes.EXPORT_FILE}); an export "
                         f"replaces its folder, so give a new one or remove it yourself (--to)")


def _export_model(predictor: Predictor, run_dir: Path, out: Path, formats, quantize: str, calibration=None) -> dict:
    """One Keras model into ``out``: a file per format, export.json and the run's history.csv (an evaluation of the
    export shows the run's losses and learning curve)."""
    model = predictor.model
    out.mkdir(parents=True)
    if (run_dir / HISTORY).is_file():
        shutil.copyfile(run_dir / HISTORY, out / HISTORY)
    model(np.zeros((1, *model.input_shape[1:]), np.float32))  # the ONNX exporter needs a model that has run
    weights = run_dir / BEST
    meta = {
        "format_version": 2, "source": run_dir.name, "scheme": predictor.scheme.name,
        "num_points": predictor.scheme.num_points, "input_shape": list(model.input_shape[1:]),
        "input": INPUT_DOC, "output": OUTPUT_DOC, "params": int(model.count_params()),
        "model": predictor.config.get("model"), "model_options": predictor.config.get("model_options", {}),
        "weights_file": BEST, "weights_sha1": runtimes.file_sha1(weights) if weights.is_file() else None,
        # per format: --quantize int8 with savedmodel said "int8" of the float32 SavedModel too (format_version 1)
        "quantize": runtimes.quantized(formats, quantize), "files": {}, "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    from facelandmarks.inference import quantize as int8
    from facelandmarks.scheme_files import definition_to_store

    definition = definition_to_store(predictor.scheme, predictor.landmark_box)
    if definition:  # a scheme of your own travels with the export (with where dlib's box lies around its points)
        meta["scheme_definition"] = definition
    images = int8.calibration_images(calibration, model.input_shape[1:]) if quantize == "int8" else None
    if quantize == "int8" and "onnx" in formats:  # for ONNX Runtime code of your own (docs/inference.md)
        meta["onnx_session_config"] = {"settings": runtimes.PRECISE_INT8, "when": ONNX_INT8_DOC}
    for fmt in formats:
        path = out / runtimes.FILES[fmt]
        start = time.perf_counter()
        _write(model, fmt, path, quantize, images)
        if fmt == "onnx":
            _embed_metadata(path, meta)
        meta["files"][fmt] = path.name
        size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size
        print(f"  {fmt}: {path.name} ({size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s)")
    write_json_whole(out / runtimes.EXPORT_FILE, meta)
    return meta


def _write(model, fmt: str, path: Path, quantize: str, images=None) -> None:
    """One format through Keras's own exporter (int8: ``inference.quantize`` with the calibration
    ``images``), its converter's chatter kept off the terminal."""
    from facelandmarks import runtime
    from facelandmarks.inference import quantize as int8

    if fmt == "litert" and images is not None:
        int8.litert_int8(model, path, images)
        return
    kwargs = {}
    if fmt == "litert" and quantize == "float16":
        import tensorflow as tf

        kwargs = {"optimizations": [tf.lite.Optimize.DEFAULT], "target_spec": {"supported_types": [tf.float16]}}
    keras_format = {"onnx": "onnx", "litert": "litert", "savedmodel": "tf_saved_model"}[fmt]
    with runtime.quiet_output():
        model.export(str(path), format=keras_format, verbose=False, **kwargs)
    if fmt == "onnx" and images is not None:
        int8.onnx_int8(path, images)


def _embed_metadata(path: Path, meta: dict) -> None:
    """Store the settings inside the ONNX file, so ``model.onnx`` alone is a usable export."""
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key = runtimes.METADATA_KEY
    mine = {**meta, "quantize": {"onnx": meta["quantize"]["onnx"]}}  # the file alone: what it holds
    entry.value = json.dumps({k: v for k, v in mine.items() if k != "files"})
    onnx.save(proto, str(path))


def _export_pipeline(predictor, run_dir: Path, out: Path, formats, quantize: str, calibration=None) -> None:
    """Each stage (stage 1, refiners, box network) into the layout of a pipeline run, stages as exports (each with its
    run's history.csv: an evaluation's stage-1 row shows the losses and curve of the run's)."""
    out.mkdir(parents=True)
    config = json.loads((run_dir / "pipeline.json").read_text())
    for relative, (stage, source) in predictor.stages().items():
        print(f" {relative}:")
        _export_model(stage, Path(source), out / relative, formats, quantize if relative == "stage1" else "none",
                      calibration if relative == "stage1" else None)  # refiners see patches, not face crops
    config["stage1"] = "stage1"  # relative to the export folder (PipelinePredictor.load resolves it there)
    if config.get("boxes"):
        config["boxes"] = "boxes"
    write_json_whole(out / "pipeline.json", config)


def _check(out: Path, predictor: Predictor, data, limit: int, arrays: dict) -> None:
    """Keras vs each exported runtime on ``data``'s faces (its ``arrays``): largest point difference and NME, into
    export.json."""
    from facelandmarks import metrics

    images = arrays["images"][:limit]
    truth = (arrays["landmarks"][:limit], arrays["visible"][:limit])
    size = predictor.input_size
    reference = predictor.predict_crops(images)
    meta = json.loads((out / runtimes.EXPORT_FILE).read_text())
    rows = {"keras": {"nme": _mean_nme(metrics, reference, truth, predictor.scheme)}}
    for fmt in meta["files"]:
        if fmt not in runtimes.RUNTIMES:
            continue
        exported = Predictor.load(out, runtime=fmt)
        points = exported.predict_crops(images)
        rows[fmt] = {"nme": _mean_nme(metrics, points, truth, predictor.scheme),
                     "max_diff_px": round(float(np.abs(points - reference).max() * size), 5)}
        kind = "" if exported.model.quantize == "none" else f" ({exported.model.quantize})"
        print(f"  check {fmt}{kind}: NME {rows[fmt]['nme']:.4f} % (Keras {rows['keras']['nme']:.4f} %), "
              f"points within {rows[fmt]['max_diff_px']:.5f} crop px of Keras on {len(images)} faces of {data}")
    meta["check"] = {"data": str(data), "faces": len(images), "rows": rows}
    write_json_whole(out / runtimes.EXPORT_FILE, meta)


def _mean_nme(metrics, points, truth, scheme) -> float:
    return round(metrics.summarize(points, truth[0], truth[1], scheme)["nme"], 5)


