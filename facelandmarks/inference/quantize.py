"""8-bit integer exports (``export.py --quantize int8``): convolutions in int8, the landmark decoding in float.

Both runtimes calibrate activation ranges on real face crops (``calibration_images``: a few hundred
training faces).  Quantizing everything costs accuracy where it cannot be spared: the last
operations turn score and offset maps into coordinates, and an int8 output alone would round every
point to 1/256 of the crop.  So only the backbone and decoder convolutions (and, in LiteRT, the
additions between them) run in int8:

- LiteRT: full-integer conversion with the output layer's operations (every node of the model's last
  layer, ``decoding_nodes``) and the output-side operation types (``FLOAT_OPS``) kept in float through
  TensorFlow Lite's quantization debugger (its documented way to exclude operations).  The input
  normalisation is a 1x1 convolution (``backbones.PixelNormalization``), so the network from the
  input's QUANTIZE to the head's outputs is one integer graph that XNNPACK runs in one piece;
- ONNX Runtime: static QDQ quantization of ``Conv`` nodes only, per channel, unsigned activations
  times signed weights (u8 x s8, ``WEIGHT_TYPE``): its x86 kernels run that pair fastest with VNNI
  (a forward pass on one thread 2.2-3.2 ms against 3.6-5.2 ms for u8 x u8 on the AVX-512 Zen 4
  EPYC).  Without VNNI (AVX2, and AVX-512 before VNNI) the same kernels add byte-product pairs into
  16-bit sums that saturate: the
  shipped model's int8 file scored 4.30 % NME on an AVX2 CPU against 4.10 % with VNNI.  So on such
  CPUs every session ``runtimes.onnx_session`` opens asks ONNX Runtime (``runtimes.PRECISE_INT8``) to
  turn the signed weights into unsigned ones while loading; u8 x u8 widens to 16 bits before
  multiplying: the same integers, the VNNI CPU's points (docs/inference.md).

``--check`` reports the NME change; measured on the shipped model in docs/inference.md.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

# LiteRT operations left in float: the decoding of PIPNet / heatmap heads (softmax, weighted sums,
# reshapes) and dense output layers of the regressors
FLOAT_OPS = ["SOFTMAX", "SUM", "STRIDED_SLICE", "MUL", "TRANSPOSE", "RESHAPE", "FULLY_CONNECTED",
             "CONCATENATION", "MEAN"]
CALIBRATION_FACES = 200
# ONNX Runtime's int8 weights: signed, fastest with VNNI; made unsigned on loading elsewhere (module docstring)
WEIGHT_TYPE = "QInt8"


def calibration_images(path, input_shape, count: int = CALIBRATION_FACES) -> np.ndarray:
    """``count`` face crops spread evenly over a prepared npz, as the model takes them: float32
    (count, S, S, C) raw pixels for ``input_shape`` (S, S, C)."""
    from facelandmarks.data.npz import load_npz
    from facelandmarks.inference.model_input import match_channels, resize_crops

    images = load_npz(path)["images"]
    step = max(1, len(images) // count)
    chosen = resize_crops(images[::step][:count], int(input_shape[0]))
    return match_channels(chosen, int(input_shape[2])).astype(np.float32)


def _samples(images: np.ndarray):
    def generate():
        for i in range(len(images)):
            yield [images[i:i + 1]]

    return generate


def decoding_nodes(float_model: bytes, layer: str) -> list[str]:
    """Names of the tensors that ``layer`` (the model's output layer) computes in a float LiteRT model,
    and of the model's outputs: the nodes the int8 conversion keeps in float.

    The converter names each tensor after the Keras layer that made it (``.../landmarks_1/add``), so the
    decoding's additions, multiplications and slices are found by name; by operation type they could
    not be told from the network's residual additions.
    """
    import tensorflow as tf

    # TensorFlow's own interpreter, as the quantization debugger uses: writing an export needs no LiteRT
    interpreter = tf.lite.Interpreter(model_content=float_model)
    tensors = interpreter.get_tensor_details()
    outputs = {d["name"] for d in interpreter.get_output_details()}
    inside = re.compile(rf"/{re.escape(layer)}(_\d+)?/")
    names = [tensors[i]["name"] for op in interpreter._get_ops_details() for i in op["outputs"]]
    return [n for n in names if n in outputs or inside.search(n)]


def litert_int8(model, path: Path, images: np.ndarray) -> None:
    """``model`` as a LiteRT file with int8 convolutions and a float decoding (see the module docstring)."""
    import tensorflow as tf

    from facelandmarks import runtime

    samples = _samples(images)
    with tempfile.TemporaryDirectory() as tmp, runtime.quiet_output():
        model.export(f"{tmp}/saved_model", format="tf_saved_model", verbose=False)
        float_model = tf.lite.TFLiteConverter.from_saved_model(f"{tmp}/saved_model").convert()
        converter = tf.lite.TFLiteConverter.from_saved_model(f"{tmp}/saved_model")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = samples
        options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_ops=FLOAT_OPS, denylisted_nodes=decoding_nodes(float_model, model.layers[-1].name))
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=samples,
                                                             debug_options=options)
        Path(path).write_bytes(debugger.get_nondebug_quantized_model())


def onnx_int8(path: Path, images: np.ndarray) -> None:
    """Quantize the float ``model.onnx`` at ``path`` in place: QDQ 8-bit convolutions, per channel, unsigned
    activations and signed weights (``WEIGHT_TYPE``)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from facelandmarks import runtime

    class Reader(CalibrationDataReader):
        def __init__(self, name: str):
            self.batches, self.name = _samples(images)(), name

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {self.name: batch[0]}

    import onnx

    name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp, runtime.quiet_output():
        prepared = f"{tmp}/prepared.onnx"
        quant_pre_process(str(path), prepared, skip_symbolic_shape=True)
        quantize_static(prepared, str(path), Reader(name), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType[WEIGHT_TYPE], op_types_to_quantize=["Conv"])
