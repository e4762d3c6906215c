"""Coarse-to-fine pipelines: a stage-1 model plus refiners of eye, brow, nose and mouth regions.

Importing this package lets ``Predictor.load`` load a pipeline run directory (``pipeline.json``)
like any single model, and makes ``cascade``, ``regions`` and ``boxes`` trainers that ``train.py``
runs by name, with the settings of ``PipelineOptions``.
"""

from facelandmarks.inference.predictor import register_run_kind
from facelandmarks.pipelines.config import PipelineOptions
from facelandmarks.pipelines.predictor import PipelinePredictor
from facelandmarks.training.trainers import register_trainer

register_run_kind("pipeline.json", PipelinePredictor.load)


def _trainer(kind: str):
    def train(config, resume: bool = False) -> dict:
        from facelandmarks.pipelines.train import train_kind  # Keras loads when a pipeline trains, not on import

        return train_kind(kind, config, resume)

    return train


def _refiner(options: dict) -> str:
    return options.get("refiner", PipelineOptions.refiner)


def _box_model(options: dict) -> str:
    return options.get("box_model", PipelineOptions.box_model)


# cascade and regions refine a stage-1 run and can reuse its training data; boxes trains on --data
register_trainer("cascade", _trainer("cascade"), PipelineOptions, needs_data=False, model_of=_refiner)
register_trainer("regions", _trainer("regions"), PipelineOptions, needs_data=False, model_of=_refiner)
register_trainer("boxes", _trainer("boxes"), PipelineOptions, model_of=_box_model)

__all__ = ["PipelinePredictor", "PipelineOptions"]
