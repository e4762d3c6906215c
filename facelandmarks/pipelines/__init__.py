"""Coarse-to-fine pipelines: a stage-1 model plus refiners of eye, brow, nose and mouth regions.

Importing this package lets ``Predictor.load`` load a pipeline run directory (``pipeline.json``)
like any single model.
"""

from facelandmarks.inference.predictor import register_run_kind
from facelandmarks.pipelines.predictor import PipelinePredictor

register_run_kind("pipeline.json", PipelinePredictor.load)

__all__ = ["PipelinePredictor"]
