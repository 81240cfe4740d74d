"""Feature extraction shared by the workers of a multi-worker run: each extracts its share, all gather.

Image i of a subset belongs to worker i % W (interleaved, so every worker gets a like mix of classes and
file sizes). A worker runs the frozen extractor on its share alone, with no collective per batch (the
extractor is built outside the strategy's scope: inference needs no mirrored variables). Then the
shares are all-gathered through the strategy's collectives (`strategy.gather`), first which images were
readable, then the features in chunks of about CHUNK_BYTES; the chief puts them in the split's order, as
one process would have extracted them, and stores them in the same cache format (a one-process run reads
an entry a multi-worker run wrote, and the other way round). The other workers take part and keep nothing.

Each image's views come from a generator seeded by (seed, the image's index in the subset), as in
train.view_features, so sharding changes no view.
"""

from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allx.errors import DataError
from allx.files import write_atomic
from allx.train.augment import Augmentation, training_views
from allx.train.features import BATCH, CacheRebuilt, FeatureSet, read_cached, read_or_reason

CHUNK_BYTES = 32 * 1024 * 1024  # per worker and all-gather (float32 on the wire)
UNREADABLE, READABLE, PADDING = 0, 1, -1


@dataclass(frozen=True)
class Share:
    """What one worker contributes: `rows[j * V:(j + 1) * V]` are the views of image `indices[j]`."""

    indices: np.ndarray  # subset positions, int64
    readable: np.ndarray  # per image, READABLE or UNREADABLE
    rows: np.ndarray  # float16 (len(indices) * V, *feature_shape)


def shares_of(total: int, workers: int) -> list[np.ndarray]:
    """Each worker's subset positions: interleaved, i % workers."""
    return [np.arange(index, total, workers, dtype=np.int64) for index in range(workers)]


def extract_share(extractor, data_dir: Path, relpaths, indices: np.ndarray, image_size, augmentation: Augmentation,
                  seed: int, store_path: Path, progress=None) -> Share:
    """The views of the images at `indices` of `relpaths` through `extractor` (raw pixels in), kept in a
    float16 memmap at `store_path` (a share of augmented ResNet50 maps is gigabytes)."""
    views = augmentation.views_per_image
    shape = tuple(int(d) for d in extractor.output_shape[1:])
    rows = np.lib.format.open_memmap(store_path, mode="w+", dtype=np.float16, shape=(len(indices) * views, *shape))
    readable = np.full(len(indices), UNREADABLE, np.int32)
    per_step = max(1, BATCH // views)
    steps = [list(range(start, min(start + per_step, len(indices)))) for start in range(0, len(indices), per_step)]

    def load(step):
        loaded = [read_or_reason(Path(data_dir) / relpaths[indices[j]], image_size) for j in step]
        return [image if isinstance(image, str) else
                training_views(image, augmentation, np.random.default_rng([seed, int(indices[j])]))
                for j, image in zip(step, loaded)]

    with ThreadPoolExecutor(max_workers=1) as pool:  # the next step decodes while this one runs
        pending = pool.submit(load, steps[0]) if steps else None
        for position, step in enumerate(steps):
            loaded = pending.result()
            if position + 1 < len(steps):
                pending = pool.submit(load, steps[position + 1])
            good = [(j, image_views) for j, image_views in zip(step, loaded) if not isinstance(image_views, str)]
            for j, _ in good:
                readable[j] = READABLE
            if good:
                pixels = np.stack([view for _, image_views in good for view in image_views]).astype(np.float32)
                features = np.asarray(extractor.predict_on_batch(pixels), np.float16)
                for k, (j, _) in enumerate(good):
                    rows[j * views:(j + 1) * views] = features[k * views:(k + 1) * views]
            if progress:
                progress(step[-1] + 1, len(indices))
    return Share(np.asarray(indices, np.int64), readable, rows)


def all_gather(strategy, array: np.ndarray) -> np.ndarray:
    """Every worker's `array` (the same shape on each), concatenated in worker order, on every worker."""
    import tensorflow as tf

    value = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(array))
    return np.asarray(strategy.gather(value, axis=0))


def gather_share(strategy, share: Share, shares: list[np.ndarray], views: int, feature_shape,
                 store_path: Path | None) -> np.ndarray:
    """Every worker's share, put in subset order: returns the readable flags per image and writes the
    readable images' rows to a float16 memmap at `store_path` (None: take part, keep nothing). `shares`
    lists every worker's indices (the same list on each)."""
    width = max(len(s) for s in shares)
    flags = np.full(width, PADDING, np.int32)
    flags[:len(share.indices)] = share.readable
    readable = np.full(sum(len(s) for s in shares), UNREADABLE, np.int32)
    for worker, gathered in enumerate(all_gather(strategy, flags).reshape(len(shares), width)):
        readable[shares[worker]] = gathered[:len(shares[worker])]
    position = np.cumsum(readable == READABLE) - 1  # where a readable image's views go in the store
    store = None if store_path is None else np.lib.format.open_memmap(
        store_path, mode="w+", dtype=np.float16, shape=(int((readable == READABLE).sum()) * views, *feature_shape))
    row_bytes = views * int(np.prod(feature_shape)) * 4
    chunk = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, width, chunk):
        piece = np.zeros((chunk * views, *feature_shape), np.float32)
        mine = share.rows[start * views:(start + chunk) * views]
        piece[:len(mine)] = mine
        gathered = all_gather(strategy, piece).reshape(len(shares), chunk, views, *feature_shape)
        if store is None:
            continue
        for worker, images in enumerate(gathered):
            for offset, index in enumerate(shares[worker][start:start + chunk]):
                if readable[index] == READABLE:
                    store[position[index] * views:(position[index] + 1) * views] = images[offset]
    if store is not None:
        store.flush()
        del store
    return readable


def write_gathered(cache_path: Path, relpaths, labels, readable: np.ndarray, store_path: Path, views: int,
                   feature_shape, augmentation: Augmentation | None, data_dir: Path, image_size) -> FeatureSet:
    """The gathered features as a feature-cache entry (the format train.features and train.view_features
    write), then read back through read_cached's checks."""
    kept = [i for i in range(len(relpaths)) if readable[i] == READABLE]
    skipped = [(relpaths[i], reason_unreadable(Path(data_dir) / relpaths[i], image_size))
               for i in range(len(relpaths)) if readable[i] != READABLE]
    meta = {"paths": [relpaths[i] for i in kept for _ in range(views)],
            "labels": [int(labels[i]) for i in kept for _ in range(views)],
            "skipped": skipped, "feature_shape": list(feature_shape)}
    if augmentation is not None:
        meta |= {"views_per_image": views, "augmentation": augmentation.key(), "first_view": 0}
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(store_path, cache_path)
    write_atomic(cache_path.with_suffix(".json"), json.dumps(meta))
    return read_cached(cache_path, cache_path.with_suffix(".json"), relpaths, labels, tuple(feature_shape), views)


def reason_unreadable(path: Path, image_size) -> str:
    """Why an image could not be read (read again here: the worker that found out may be another host)."""
    reason = read_or_reason(path, image_size)
    return reason if isinstance(reason, str) else f"{path}: unreadable on another worker, expected the same data"


def read_if_cached(cache_path: Path, relpaths, labels, feature_shape, views: int) -> FeatureSet | None:
    """The cached entry when it passes read_cached's checks; else None (a damaged one with CacheRebuilt)."""
    marker = cache_path.with_suffix(".json")
    if not marker.exists():
        return None
    try:
        return read_cached(cache_path, marker, relpaths, labels, tuple(feature_shape), views)
    except DataError as err:
        warnings.warn(f"feature cache rebuilt: {err}", CacheRebuilt, stacklevel=2)
        marker.unlink(missing_ok=True)
        return None
