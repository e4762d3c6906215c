"""Dense branches on precomputed InceptionV3 features, their squares and sines (seed 000 3.2.2)."""

from __future__ import annotations

import keras

from facelandmarks.models import backbones
from facelandmarks.models.heads import (
    check_dropout,
    check_units,
    dense_stack,
    landmark_output,
)
from facelandmarks.models.layers import FeatureTransform
from facelandmarks.models.registry import FEATURES, ModelSpec, register


def build_inception_bottleneck(input_shape, num_points, branch_units=(512,), dense_units=(512,), dropout=0.3):
    """Seed 000's bottleneck head on precomputed (N, F) backbone features.

    Three dense branches see the features, their squares and their sines;
    their outputs are concatenated and go through dense layers to the
    linear 2K output.  Input: ``features`` of a bottleneck npz
    (``datagen.py bottleneck``, InceptionV3 by default: F = 2048).

    Args:
        branch_units: dense layers of each branch.
        dense_units: dense layers after the concatenation.
        dropout: dropout after each hidden dense layer.
    """
    branch_units = check_units("branch_units", branch_units, allow_empty=False)
    dense_units, dropout = check_units("dense_units", dense_units), check_dropout(dropout)
    features = keras.Input(tuple(input_shape), name="features")
    branches = []
    for function in FeatureTransform.FUNCTIONS:
        view = FeatureTransform(function, name=f"{function}_features")(features)
        branches.append(dense_stack(view, branch_units, dropout, function))
    x = keras.layers.Concatenate(name="branches_concat")(branches)
    x = dense_stack(x, dense_units, dropout, "head")
    return keras.Model(features, landmark_output(x, num_points), name="inception_bottleneck_landmarks")


register(ModelSpec("inception_bottleneck", build_inception_bottleneck,
          "dense branches on InceptionV3 features, their squares and sines (bottleneck npz)",
          (backbones.BACKBONES["inception"].features,), input_kind=FEATURES, source="seed 000 3.2.2"))
