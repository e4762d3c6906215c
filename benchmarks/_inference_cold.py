"""The cold start of ``inference_speed.py``: one photo marked by a fresh process (``evaluate.py --image``, a
``Predictor.load`` script per runtime, a plain dlib script), seconds to the written PNG (its mtime) and to exit, and
its peak RSS.

Not a benchmark (no ``--help``): ``inference_speed.py`` calls ``cold_start``."""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

try:
    import _inference_common as common  # python benchmarks/inference_speed.py: this folder leads sys.path
except ModuleNotFoundError:  # imported from the repository root
    from benchmarks import _inference_common as common

DLIB_SCRIPT = """
import sys, cv2, dlib
image = cv2.imread(sys.argv[1])[..., ::-1].copy()
predictor = dlib.shape_predictor(sys.argv[3])
for rect in dlib.get_frontal_face_detector()(image, 1):
    for p in predictor(image, rect).parts():
        cv2.circle(image, (p.x, p.y), 2, (0, 255, 0), -1)
cv2.imwrite(sys.argv[2] + "/marked.png", image[..., ::-1])
"""
LIBRARY_SCRIPT = """
import sys
from pathlib import Path
from facelandmarks.data.faces import as_photo
from facelandmarks.inference.photos import write_results
from facelandmarks.inference.predictor import Predictor
photo = Path(sys.argv[1])
predictor = Predictor.load(sys.argv[3], runtime=sys.argv[4])
image = as_photo(photo)
write_results(photo, image, predictor.detect_and_predict(image), Path(sys.argv[2]), {"scheme": predictor.scheme.name})
"""


def cold_start(args) -> list[dict]:
    """Fresh processes marking one photo: seconds to the written PNG and to exit, peak RSS (medians)."""
    from facelandmarks.inference.dlib_baseline import DlibPredictor
    from facelandmarks.inference.runtimes import is_export

    photo, python = str(args.samples / "einstein.jpg"), sys.executable
    evaluate = [python, str(common.ROOT / "evaluate.py"), str(args.model), "--image", photo, "--out"]
    # the --runtimes asked for (litert's row failed when they left out an export without LiteRT's file); an export
    # runs without Keras: no Keras rows for it
    ours = [r for r in ("keras", "onnx", "litert") if r in args.runtimes and not (r == "keras" and is_export(args.model))]
    cases = [(f"evaluate.py --image --runtime {r}", evaluate, ["--runtime", r]) for r in ours if r != "litert"]
    cases += [(f"Predictor.load(runtime={r!r}) script", [python, "-c", LIBRARY_SCRIPT, photo], [str(args.model), r])
              for r in ours]
    if "dlib" in args.runtimes:
        cases.append(("plain dlib script (detector + shape predictor)", [python, "-c", DLIB_SCRIPT, photo],
                      [str(DlibPredictor.default_model_path())]))
    return [_median_of_runs(name, head, tail, args.processes) for name, head, tail in cases]


def _median_of_runs(name: str, head: list, tail: list, processes: int) -> dict:
    """``head + [a fresh folder] + tail`` run ``processes`` times (until one writes no PNG): the medians."""
    runs = []
    for _ in range(processes):
        with tempfile.TemporaryDirectory() as out:
            done = common.spawn(head + [out] + tail)
            pngs = list(Path(out).glob("*.png"))
            if done["rc"] or not pngs:
                break
            runs.append((pngs[0].stat().st_mtime - done["t0"], done["wall_s"], done["rss_mb"]))
    med = [statistics.median(col) for col in zip(*runs)] if runs else [float("nan")] * 3
    return {"name": name, "to_photo_s": med[0], "exit_s": med[1], "rss_mb": med[2], "runs": len(runs)}
