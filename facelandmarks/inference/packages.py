"""Which Python packages writing and running each export format needs, and the extra that installs each.

One table, read by ``export.py`` before it writes (``inference.export``) and by the hints that say how to
export a run and run its export (``inference.runtimes``), so the two never disagree.  Imports no backend.
"""

from __future__ import annotations

import importlib.util

from facelandmarks.runtime import keras_backend

# {format: {module: the extra that installs it}} that writing each format needs: Keras's exporters use TensorFlow's
# converters, and ONNX on the TensorFlow backend tf2onnx (on JAX, Keras names what it needs itself: jax2onnx)
WRITE = {"litert": {"tensorflow": "export"}, "savedmodel": {"tensorflow": "export"},
         "onnx": {"tf2onnx": "export", "onnx": "export"}}
TENSORFLOW_ONLY = ("tf2onnx",)
# {runtime: (module, pip package)} that runs each exported format; the extra bears the runtime's name
RUN = {"onnx": ("onnxruntime", "onnxruntime"), "litert": ("ai_edge_litert", "ai-edge-litert")}
DEFAULT_FORMATS = ("onnx", "litert")  # what export.py writes unless told


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def needed(formats=DEFAULT_FORMATS, quantize: str = "none", check: bool = False) -> dict:
    """``{module: the extra that installs it}`` for each module writing ``formats`` needs: the converters, onnxruntime
    for an int8 ONNX file (it quantizes), and with ``check`` each exported format's runtime."""
    needs = {}
    for fmt, modules in WRITE.items():
        if fmt in formats:
            needs.update(modules)
    if keras_backend() != "tensorflow":
        needs = {module: extra for module, extra in needs.items() if module not in TENSORFLOW_ONLY}
    if "onnx" in formats and quantize == "int8":
        needs[RUN["onnx"][0]] = "onnx"
    if check:
        needs.update({RUN[fmt][0]: fmt for fmt in RUN if fmt in formats})
    return needs


def missing(formats=DEFAULT_FORMATS, quantize: str = "none", check: bool = False) -> dict:
    """``needed(...)``, less what is installed."""
    return {module: extra for module, extra in needed(formats, quantize, check).items() if not installed(module)}
