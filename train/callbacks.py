"""Keras callbacks of a training run: checkpoint the full model on improvement, report epoch progress."""

from __future__ import annotations

from pathlib import Path

import keras

from allx.train.model_io import save_keras_model


class CheckpointFullModel(keras.callbacks.Callback):
    """Save the full end-to-end model (atomically) whenever `monitor` improves, so Ctrl-C keeps a good one."""

    def __init__(self, full_model: keras.Model, path: Path, monitor: str = "val_loss"):
        super().__init__()
        self.full_model, self.path, self.monitor = full_model, Path(path), monitor
        self.best = float("inf")

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.best:
            self.best = value
            save_keras_model(self.full_model, self.path)


class EpochProgress(keras.callbacks.Callback):
    """Forward each epoch end to `progress(stage, done, total)`."""

    def __init__(self, stage: str, total: int, progress=None):
        super().__init__()
        self.stage, self.total, self.progress = stage, total, progress

    def on_epoch_end(self, epoch, logs=None):
        if self.progress:
            self.progress(self.stage, epoch + 1, self.total)
