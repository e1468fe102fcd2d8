"""models package of fedgate: ONNX model definitions, preprocessing, training artifacts, trainer.

Public entry points (see docs/models.md): ``models.ecg.beat_dataset`` / ``beats_from_stream``,
``models.artifacts.ensure`` / ``load``, ``models.trainer.train_local``,
``models.evaluate.evaluate``, ``models.export.export_inference``. Importing this package is
cheap: nothing here imports onnx, onnxruntime or wfdb until it is used.
"""

from __future__ import annotations
