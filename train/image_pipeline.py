"""A tf.data pipeline of images for fine-tuning: decode with the one loader, augment, batch, prefetch.

Decoding and augmentation are numpy code (allx.images, train.augment) wrapped in tf.numpy_function, so
fine-tuning sees exactly the views that frozen-base training cached; two parallel calls keep the
accelerator fed while the next batch is prepared. Under a tf.distribute strategy Keras splits each
batch over the replicas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from allx.images import load_image
from allx.train.augment import Augmentation, random_view

PARALLEL_CALLS = 2


def image_dataset(data_dir, relpaths, labels, n_classes: int, image_size: tuple[int, int], batch_size: int,
                  augmentation: Augmentation = Augmentation(), shuffle: bool = False, seed: int = 0):
    """Batches of (float32 pixels 0..255 (B, H, W, 3), one-hot labels); one random view per image per epoch."""
    import tensorflow as tf

    data_dir, relpaths = Path(data_dir), list(relpaths)
    rng = np.random.default_rng(seed)
    one_hot = np.eye(n_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]

    def load(index) -> np.ndarray:
        pixels = load_image(data_dir / relpaths[int(index)], image_size)
        if augmentation.kinds:
            pixels = random_view(pixels, augmentation, rng)
        return pixels.astype(np.float32)

    def to_example(index):
        pixels = tf.numpy_function(load, [index], tf.float32, stateful=True)
        pixels.set_shape((*image_size, 3))
        return pixels, tf.gather(one_hot, index)

    data = tf.data.Dataset.range(len(relpaths))
    if shuffle:
        data = data.shuffle(len(relpaths), seed=seed, reshuffle_each_iteration=True)
    data = data.map(to_example, num_parallel_calls=PARALLEL_CALLS, deterministic=not augmentation.is_random)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
