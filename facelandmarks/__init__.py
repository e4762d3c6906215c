"""facelandmarks: train, evaluate and use facial-landmark models with Keras 3.

The package follows the data flow:

- ``facelandmarks.landmarks``  -- landmark schemes (mirror permutations, normalising points, regions)
- ``facelandmarks.data``       -- dataset readers, splits, face crops, the npz schema, augmentation, feeding
- ``facelandmarks.models``     -- the model registry, layers, backbones, losses
- ``facelandmarks.training``   -- run configuration, ``fit``, callbacks, resuming, distribution
- ``facelandmarks.inference``  -- ``Predictor`` on crops, photos and video; dlib's predictor as baseline
- ``facelandmarks.pipelines``  -- coarse-to-fine refinement behind the same ``Predictor`` interface
- ``facelandmarks.evaluation`` -- metrics, tables, plots
- ``facelandmarks.cli``        -- the five scripts: datagen, models, train, evaluate, export

A lower layer never imports a higher one.  ``from facelandmarks import Predictor`` is the entry
point for using a trained run::

    from facelandmarks import Predictor
    predictor = Predictor.load("runs/mobilenetv2-128")
    points = predictor.predict(rgb_image)  # (faces, K, 2) pixel coordinates

``FaceTracker(predictor).update(frame)`` for the faces of consecutive video frames, and
``predictor.align(rgb_image)`` or ``align_face(image, points)`` for faces turned upright in a fixed place.
"""

from facelandmarks.runtime import quiet_startup

quiet_startup()

__version__ = "0.2.0"
__all__ = ["Predictor", "DlibPredictor", "PipelinePredictor", "FaceTracker", "read_video_landmarks", "align_face",
           "__version__"]


def __getattr__(name):  # imported on first use: TensorFlow/JAX load only when a model is needed
    if name in ("Predictor", "PipelinePredictor"):
        from facelandmarks import pipelines  # registers pipeline runs with Predictor.load
        from facelandmarks.inference.predictor import Predictor

        return Predictor if name == "Predictor" else pipelines.PipelinePredictor
    if name == "FaceTracker":
        from facelandmarks.inference.video import FaceTracker

        return FaceTracker
    if name == "read_video_landmarks":
        from facelandmarks.inference.video_files import read_video_landmarks

        return read_video_landmarks
    if name == "align_face":
        from facelandmarks.inference.align import align_face

        return align_face
    if name == "DlibPredictor":
        from facelandmarks.inference.dlib_baseline import DlibPredictor

        return DlibPredictor
    raise AttributeError(f"module 'facelandmarks' has no attribute {name!r}")
