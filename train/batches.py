"""Keras batch feeders: cached features (head training) and images read with allx.images (fine-tuning,
evaluation, the naive baseline)."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from allx.images import load_image

# Cached features up to this size (as float32) are read into memory once and fed by tf.data, which is
# several times faster per step than a Python feeder; larger sets stream from the float16 memmap.
IN_MEMORY_BYTES = 1_500_000_000


def feature_batches(features: np.ndarray, labels: np.ndarray, n_classes: int, batch_size: int, shuffle: bool,
                    seed: int = 0, class_weights: dict[int, float] | None = None, rows: np.ndarray | None = None):
    """Training/validation input over cached features: in memory (tf.data) when small enough, else streamed.

    `rows` picks some rows of `features` and `labels` (a cross-validation fold of one cache), in that order;
    the memmap is read only where the batches need it.
    """
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows, dtype=np.int64)
    labels = np.asarray(labels)[rows]
    if len(rows) * int(np.prod(features.shape[1:])) * 4 > IN_MEMORY_BYTES:
        return FeatureBatches(features, labels, n_classes, batch_size, shuffle, seed, class_weights, rows)
    import tensorflow as tf

    columns = [np.asarray(features[rows], dtype=np.float32), keras.utils.to_categorical(labels, n_classes)]
    if class_weights:
        columns.append(np.array([class_weights[int(c)] for c in labels], np.float32))
    data = tf.data.Dataset.from_tensor_slices(tuple(columns))
    if shuffle:
        data = data.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class FeatureBatches(keras.utils.PyDataset):
    """Batches of (features, one-hot labels[, sample weights]) read from a memmap, reshuffled every epoch.

    `labels[i]` belongs to feature row `rows[i]` (all rows in order when `rows` is None)."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, n_classes: int, batch_size: int,
                 shuffle: bool, seed: int = 0, class_weights: dict[int, float] | None = None,
                 rows: np.ndarray | None = None):
        super().__init__()
        self.features, self.labels, self.n_classes = features, labels, n_classes
        self.rows = np.arange(len(labels)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.batch_size, self.shuffle, self.class_weights = batch_size, shuffle, class_weights
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(labels))
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __getitem__(self, index):
        picked = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        picked = picked[np.argsort(self.rows[picked], kind="stable")]  # in row order: sequential reads
        x = np.asarray(self.features[self.rows[picked]], dtype=np.float32)
        y = keras.utils.to_categorical(self.labels[picked], self.n_classes)
        if self.class_weights:
            return x, y, np.array([self.class_weights[int(c)] for c in self.labels[picked]], np.float32)
        return x, y

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)


class ImageBatches(keras.utils.PyDataset):
    """Batches of raw RGB pixels (float32 0..255) and one-hot labels, decoded with the one image loader."""

    def __init__(self, data_dir: Path, relpaths, labels, n_classes: int, image_size: tuple[int, int],
                 batch_size: int, shuffle: bool = False, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.data_dir, self.relpaths = Path(data_dir), list(relpaths)
        self.labels, self.n_classes = np.asarray(labels, dtype=np.int64), n_classes
        self.image_size, self.batch_size, self.shuffle = image_size, batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(len(self.relpaths))
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.relpaths) / self.batch_size)

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x = np.stack([load_image(self.data_dir / self.relpaths[i], self.image_size) for i in rows]).astype(np.float32)
        return x, keras.utils.to_categorical(self.labels[rows], self.n_classes)

    def on_epoch_end(self):
        if self.shuffle:
            self.rng.shuffle(self.order)
