"""The NME training metric against ``metrics.py`` on real MUCT faces (hidden points included)."""

import numpy as np
import pytest

from facelandmarks import metrics
from facelandmarks.landmarks import get_scheme
from facelandmarks.models import losses

from .face_batches import face_batch

pytestmark = [pytest.mark.data, pytest.mark.backend]


def test_nme_metric_agrees_with_metrics_py_on_real_faces(data_dir):
    _, landmarks, visible = face_batch(data_dir, "muct76", size=32, count=8)
    assert (~visible).sum() >= 5, "the MUCT test faces should hide some points"
    pred = landmarks + np.random.default_rng(2).normal(0, 0.02, landmarks.shape).astype(np.float32)
    metric = losses.NormalizedMeanError("muct76")
    assert metric.norm_points == get_scheme("muct76").norm_points
    metric.update_state(losses.pack_targets(landmarks, visible), pred.reshape(len(pred), -1))
    expected = 100 * np.nanmean(metrics.nme_per_face(pred, landmarks, visible, "muct76"))
    assert float(metric.result()) == pytest.approx(expected, rel=1e-4)
    restored = losses.NormalizedMeanError.from_config(metric.get_config())
    assert restored.norm_points == metric.norm_points and restored.name == "nme"
