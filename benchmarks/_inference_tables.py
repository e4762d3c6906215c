"""The machine line and the markdown tables ``inference_speed.py`` prints from its results (``tables``).

Not a benchmark (no ``--help``)."""

from __future__ import annotations

import platform
from importlib import metadata

try:
    import _inference_common as common  # python benchmarks/inference_speed.py: this folder leads sys.path
except ModuleNotFoundError:  # imported from the repository root
    from benchmarks import _inference_common as common


def versions() -> str:
    from facelandmarks.machine import cpu_description

    def version(*dists):
        found = [d for d in dists if list(metadata.distributions(name=d))]
        return metadata.version(found[0]) if found else "not installed"

    return (f"{cpu_description()}; Python {platform.python_version()}, onnxruntime {version('onnxruntime')}, "
            f"ai-edge-litert {version('ai-edge-litert')}, tensorflow {version('tensorflow', 'tensorflow-cpu')}, "
            f"keras {version('keras')}, dlib {version('dlib', 'dlib-bin')}")


def table(header: list, rows: list) -> list:
    """Markdown lines: the first column left-aligned, the others right-aligned; None or nan prints as —."""
    cell = lambda v: "—" if v is None or v != v else str(v) if isinstance(v, (str, int)) else f"{v:.{2 if abs(v) < 100 else 0}f}"  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|---" + "|--:" * (len(header) - 1) + "|"] + \
        ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _whole(v):
    return None if v is None or v != v else round(v)  # None, nan: a failed worker


def tables(result: dict) -> str:
    """The machine line, then the faces table, the photo pipeline's and the cold start's (where measured)."""
    return "\n".join(_faces_table(result) + _photo_table(result) + _cold_table(result))


def _faces_table(result: dict) -> list:
    w, runtimes, cores = result["workers"], result["runtimes"], common.CORES
    get = lambda rt, threads, key: (w.get(f"{rt}/{threads}") or {}).get(key)  # noqa: E731
    label = lambda rt: common.label(rt, result)  # noqa: E731
    batch = next((r["batch"] for r in w.values() if r), result["batch"])
    lines = [f"Machine: {result['machine']}", "",
             f"Faces: the first {result['faces']} of {result['data']}; medians of {result['repeats']} calls (batch 1), "
             f"{result['batch_repeats']} (batch {batch}); load: median of {result['processes']} fresh processes.", ""]
    passes = [name for name, on in (("the flip test", result.get("flip_test")), ("recrop", result.get("recrop"))) if on]
    if passes:
        count = 2 ** len(passes)
        lines[-1:-1] = ["", f"Our models with {' and '.join(passes)}: {count} network passes per face (the forward "
                            "column times one)."]
    header = ["runtime", "ms/face b1, 1 thread", f"ms/face b1, {cores} threads", "forward ms b1, 1 thread",
              f"faces/s b{batch}, 1 thread", f"faces/s b{batch}, {cores} threads", "load s", "load peak RSS MB",
              "peak RSS MB (timing run)"]
    rows = [[label(rt), get(rt, 1, "face_ms"), get(rt, cores, "face_ms"), get(rt, 1, "forward_ms"),
             _whole(get(rt, 1, "batch_faces_per_s")), _whole(get(rt, cores, "batch_faces_per_s")),
             (result["load"].get(rt) or {}).get("load_s"), _whole((result["load"].get(rt) or {}).get("rss_loaded_mb")),
             _whole(max(get(rt, t, "rss_peak_mb") or 0 for t in (1, cores)) or None)] for rt in runtimes]
    lines += table(header, rows)
    dlib_ms = get("dlib", 1, "face_ms")
    if dlib_ms:
        ratios = [f"{label(rt)} {get(rt, 1, 'face_ms') / dlib_ms:.2f}" for rt in runtimes
                  if rt != "dlib" and get(rt, 1, "face_ms")]  # Keras on JAX: timed on every core only
        if ratios:
            lines += ["", "ours / dlib, ms per face at batch 1 on one thread: " + ", ".join(ratios)]
    return lines


def _photo_table(result: dict) -> list:
    w = result["workers"]
    photo_rows = [w[f"{rt}/1"] for rt in result["runtimes"] if (w.get(f"{rt}/1") or {}).get("photos")]
    if not photo_rows:
        return []
    first = photo_rows[0]
    lines = ["", f"Photo pipeline: {first['photos']} photos ({first['photo_faces']} faces found), one thread, "
             f"median of {result['photo_repeats']} pass(es)", ""]
    rows = []
    for r in photo_rows:
        total, n = r["detect_s"] + r["mark_s"], r["photos"]
        rows.append([f"dlib detector + {common.label(r['runtime'], result)}", n / total, 1000 * r["detect_s"] / n,
                     1000 * r["mark_s"] / n, f"{100 * r['detect_s'] / total:.1f} %", f"{100 * r['mark_s'] / total:.1f} %"])
    return lines + table(["pipeline", "frames/s", "detector ms/photo", "landmarks ms/photo", "detector share",
                          "landmarks share"], rows)


def _cold_table(result: dict) -> list:
    if not result["cold"]:
        return []
    return ["", f"Cold start: {result['samples']}/einstein.jpg, fresh process (warm page cache), "
            f"median of {result['processes']}", ""] + \
        table(["command", "s to marked photo", "s to exit", "peak RSS MB"],
              [[r["name"], r["to_photo_s"], r["exit_s"], _whole(r["rss_mb"])] for r in result["cold"]])
