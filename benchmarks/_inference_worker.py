"""A timing process of ``inference_speed.py`` (the script with ``--worker``): one runtime on a number of threads,
loaded, then timed on faces (batch 1, the forward pass alone, a large batch) and on the photo pipeline.

Not a benchmark: ``inference_speed.py`` runs it in a fresh process per (runtime, threads) pair, as TensorFlow fixes
its thread pools at start-up, and prints its JSON line."""

from __future__ import annotations

import itertools
import os
import resource
import time

import numpy as np

from facelandmarks.cli.common import complain

try:
    import _inference_common as common  # python benchmarks/inference_speed.py: this folder leads sys.path
except ModuleNotFoundError:  # imported from the repository root
    from benchmarks import _inference_common as common


def load(runtime: str, model, threads: int, flip_test: bool = False, recrop: bool = False):
    """``(predictor, detector)``: a ``Predictor`` (or ``DlibPredictor``) on ``threads`` threads, with ``flip_test``
    and ``recrop`` (dlib: neither), and a ``FaceDetector``."""
    from facelandmarks.data.faces import FaceDetector

    if runtime == "dlib":
        from facelandmarks.inference.dlib_baseline import DlibPredictor

        return DlibPredictor(), FaceDetector()
    if runtime == "keras":
        from facelandmarks.runtime import startup

        startup()  # as the scripts do: a quiet import of Keras and TensorFlow
        import tensorflow as tf

        if threads < common.CORES:  # all cores: TensorFlow's defaults
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
    from facelandmarks.inference.predictor import Predictor

    predictor = Predictor.load(model, runtime=runtime, threads=threads, flip_test=flip_test, recrop=recrop)
    if predictor.runtime != runtime:  # as every benchmark tells a failure: one line naming it, exit status 2 (was 1)
        complain(f"inference_speed.py: asked for {runtime}, Predictor.load gave {predictor.runtime}")
        raise SystemExit(2)
    return predictor, predictor.detector


def median_s(call, repeats: int, warmup: int) -> float:
    """Median wall seconds of ``call(i)``, i counting the calls (``inference.predictor.median_ms``)."""
    from facelandmarks.inference.predictor import median_ms

    calls = itertools.count()
    return median_ms(lambda: call(next(calls)), repeats, warmup) / 1000.0


def faces_and_photos(args):
    """The first ``--faces`` test faces (crops, crop boxes, their photos) and the photo pipeline's photos, RGB."""
    from facelandmarks.data.faces import as_photo
    from facelandmarks.data.npz import load_npz

    arrays = load_npz(args.data)  # main has checked its first faces (data_problem)
    n = min(args.faces, len(arrays["images"]))
    paths = [str(p) for p in arrays["path"][:n]]
    photo_paths = list(dict.fromkeys(paths)) + sorted(str(p) for p in args.samples.glob("*.jpg"))
    photos = {p: as_photo(p) for p in photo_paths}
    return arrays["images"][:n], arrays["box"][:n], [photos[p] for p in paths], [photos[p] for p in photo_paths]


def worker(args) -> dict:
    """Load, then (unless ``--worker load``) time faces and, with ``--photo-run``, photos."""
    runtime, rss_mb = args.runtime, lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    predictor, detector = load(runtime, args.model, args.threads, args.flip_test, args.recrop)
    out = {"runtime": runtime, "threads": args.threads, "rss_loaded_mb": rss_mb(),
           "load_s": time.time() - float(os.environ.get(common.T0_ENV, "nan"))}
    if args.worker == "load":
        return out
    crops, boxes, face_photos, photos = faces_and_photos(args)
    out.update(time_faces(args, predictor, crops, boxes, face_photos))
    if args.photo_run:
        out.update(photo_pipeline(runtime, predictor, detector, photos, args.photo_repeats))
    out["rss_peak_mb"] = rss_mb()
    return out


def time_faces(args, predictor, crops, boxes, face_photos) -> dict:
    """Milliseconds per face at batch 1 (photo + box -> points in photo pixels; dlib: ``predict_box`` on the photo),
    the forward pass alone (our models), the cores the batch-1 calls kept busy, and faces per second at ``--batch``."""
    from facelandmarks.data.faces import crop_face, detection_from_crop_box, points_from_crop

    out, n, batch = {}, len(crops), min(args.batch, len(crops))
    if args.runtime == "dlib":
        dets = [detection_from_crop_box(b) for b in boxes]
        one = lambda i: predictor.predict_box(face_photos[i % n], dets[i % n])  # noqa: E731
        many = lambda _: [predictor.predict_box(face_photos[i], dets[i]) for i in range(batch)]  # noqa: E731
    else:
        def mark(index):  # what dlib's predict_box does: photo + box -> points in photo pixels
            cut = np.stack([crop_face(face_photos[i], boxes[i], predictor.crop_size) for i in index])
            return points_from_crop(predictor.predict_crops(cut, batch_size=len(index)), boxes[index])

        one = lambda i: mark([i % n])  # noqa: E731
        many = lambda _: mark(list(range(batch)))  # noqa: E731
        prepared = [predictor.prepare(c) for c in crops]
        forward = lambda i: predictor.model.predict_on_batch(prepared[i % n])  # noqa: E731
        out["forward_ms"] = 1000 * median_s(forward, args.repeats, args.warmup)
    cpu, wall = time.process_time(), time.perf_counter()  # CPU / wall: how many cores the batch-1 calls kept busy
    out["face_ms"] = 1000 * median_s(one, args.repeats, args.warmup)
    out["face_cpu_per_wall"] = (time.process_time() - cpu) / (time.perf_counter() - wall)
    out["batch"], out["batch_faces_per_s"] = batch, batch / median_s(many, args.batch_repeats, 2)
    return out


def photo_pipeline(runtime: str, predictor, detector, photos: list, passes: int) -> dict:
    """Seconds of detection and of landmarks over the photos, one photo at a time (median of ``passes``)."""
    if runtime == "dlib":
        mark = lambda photo, dets: [predictor.predict_box(photo, d) for d in dets]  # noqa: E731
    else:
        mark = lambda photo, dets: predictor.detect_and_predict(photo, detections=dets)  # noqa: E731
        for k in range(1, 9):  # first call per batch size untimed (Keras traces a function for each)
            predictor.predict_crops(np.zeros((k, predictor.crop_size, predictor.crop_size, 3), np.uint8), batch_size=k)
    passes_s = []
    for _ in range(passes):
        detect_s = mark_s = 0.0
        found = 0
        for photo in photos:
            start = time.perf_counter()
            dets, _ = detector.detect_all(photo)
            middle = time.perf_counter()
            if len(dets):
                mark(photo, dets)
            detect_s += middle - start
            mark_s += time.perf_counter() - middle
            found += len(dets)
        passes_s.append((detect_s, mark_s))
    detect_s, mark_s = np.median(passes_s, axis=0)
    return {"photos": len(photos), "photo_faces": found, "detect_s": detect_s, "mark_s": mark_s}
