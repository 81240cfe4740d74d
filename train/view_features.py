"""Backbone features of augmented views, extracted once and cached like train.features does for images.

Each image gives `augmentation.views_per_image` rows, stored image-major (image i's views are rows
i*V .. i*V+V-1) in a float16 memmap, so memory holds one batch of views at a time and the disk holds
V times the plain cache. The FeatureSet repeats each path and label V times, so `features[i]` still
belongs to `paths[i]` and the head trains on it unchanged. Random jitters come from a generator seeded
per image (seed, index): the same settings give the same views, whatever the batch order. With background
swap composites (train.background_swap) each image's composites follow its augmented views.
"""

from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from allx.train.augment import Augmentation, training_views
from allx.errors import DataError
from allx.train.features import BATCH, CacheRebuilt, FeatureSet, read_cached, read_or_reason

IMAGES_PER_STEP = 8  # images whose views are decoded and augmented together (8 x 8 views = 64 rows)


def extract_view_features(extractor, data_dir: Path, relpaths, labels, image_size: tuple[int, int],
                          augmentation: Augmentation, cache_path: Path, seed: int = 0, progress=None,
                          strategy=None, first_view: int = 0, composites=None) -> FeatureSet:
    """Features of every training view of `relpaths`, cached at cache_path; unreadable images are skipped.

    `progress(done_images, total_images)` is called per step. With a tf.distribute `strategy` (the
    extractor built in its scope), each step's views are spread over its replicas. `first_view` > 0 keeps
    only views first_view.. of each image (e.g. only the jittered copies when the clean views are cached).
    `composites` (a train.background_swap.Composites) adds its `copies` composites after each image's views.
    """
    done_marker = cache_path.with_suffix(".json")
    views = augmentation.views_per_image - first_view + (composites.copies if composites else 0)
    feature_shape = tuple(int(d) for d in extractor.output_shape[1:])
    if done_marker.exists():
        try:
            return read_cached(cache_path, done_marker, relpaths, labels, feature_shape, views)
        except DataError as err:
            warnings.warn(f"feature cache rebuilt: {err}", CacheRebuilt, stacklevel=2)
            done_marker.unlink(missing_ok=True)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_path.with_name(cache_path.stem + ".partial.npy")
    store = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16,
                                      shape=(len(relpaths) * views, *feature_shape))
    predict = make_predict(extractor, strategy)
    kept, skipped, row = [], [], 0
    steps = [list(range(i, min(i + IMAGES_PER_STEP, len(relpaths)))) for i in range(0, len(relpaths), IMAGES_PER_STEP)]

    def load_views(index: int):
        pixels = read_or_reason(Path(data_dir) / relpaths[index], image_size)
        if isinstance(pixels, str):
            return pixels
        augmented = training_views(pixels, augmentation, np.random.default_rng([seed, index]))[first_view:]
        return augmented + (composites.views(index, pixels) if composites else [])

    with ThreadPoolExecutor(max_workers=2) as pool:
        loads = pool.map(lambda step: [load_views(i) for i in step], steps)
        for step, loaded in zip(steps, loads):  # augmenting the next step overlaps this one's inference
            good = [(i, v) for i, v in zip(step, loaded) if not isinstance(v, str)]
            skipped += [(relpaths[i], v) for i, v in zip(step, loaded) if isinstance(v, str)]
            if good:
                pixels = np.stack([view for _, image_views in good for view in image_views]).astype(np.float32)
                store[row:row + len(pixels)] = predict(pixels)
                row += len(pixels)
                kept += [i for i, _ in good]
            if progress:
                progress(step[-1] + 1, len(relpaths))
    store.flush()
    del store
    os.replace(partial, cache_path)
    meta = {"paths": [relpaths[i] for i in kept for _ in range(views)],
            "labels": [int(labels[i]) for i in kept for _ in range(views)],
            "skipped": skipped, "feature_shape": list(feature_shape), "views_per_image": views,
            "augmentation": augmentation.key(), "first_view": first_view}
    tmp = done_marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, done_marker)
    return read_cached(cache_path, done_marker, relpaths, labels, feature_shape, views)


def make_predict(extractor, strategy):
    """Batch -> features: predict_on_batch on one device, else Keras' predict over the strategy's replicas."""
    if strategy is None or strategy.num_replicas_in_sync == 1:
        return lambda pixels: np.asarray(extractor.predict_on_batch(pixels))
    batch = BATCH * strategy.num_replicas_in_sync
    return lambda pixels: np.asarray(extractor.predict(pixels, batch_size=batch, verbose=0))


def mean_over_views(probabilities: np.ndarray, views: int) -> np.ndarray:
    """(n * views, classes) image-major rows -> (n, classes): test-time averaging over cached views."""
    probabilities = np.asarray(probabilities)
    return probabilities.reshape(-1, views, probabilities.shape[-1]).mean(axis=1)
