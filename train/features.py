"""Backbone features computed once and cached on disk, so a frozen-base head trains in seconds.

With a frozen backbone, every epoch of a naive `model.fit` recomputes the same backbone outputs. Here
they are computed once per (data, backbone, weights, image size) and stored as a float16 .npy memmap:
a ResNet50 7x7x2048 map is 200 KB per image in float16, so 3,000 images are ~0.6 GB on disk and only
one batch at a time is in memory while the head trains.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allx.errors import ImageError
from allx.images import load_image

BATCH = 32


@dataclass(frozen=True)
class FeatureSet:
    """Cached features of some images: `features[i]` belongs to `paths[i]`; `skipped` could not be read."""

    features: np.ndarray  # memmap, float16, (n, *feature_shape)
    paths: tuple[str, ...]
    labels: np.ndarray  # int class indices, aligned with features
    skipped: tuple[tuple[str, str], ...]  # (relpath, reason)


def default_cache_dir() -> Path:
    return Path(os.environ.get("ALLX_CACHE_DIR", Path.home() / ".cache" / "allx")) / "features"


def cache_key(parts: dict) -> str:
    """A short hash of everything that changes the features (data, backbone, weights, size, file list)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def extract_features(extractor, data_dir: Path, relpaths, labels, image_size: tuple[int, int],
                     cache_path: Path, progress=None) -> FeatureSet:
    """Features of `relpaths` under data_dir from `extractor` (raw pixels in), cached at cache_path.

    Unreadable images are skipped and listed, never fatal. `progress(done, total)` is called per batch.
    """
    done_marker = cache_path.with_suffix(".json")
    if done_marker.exists():
        return read_cached(cache_path, done_marker)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    feature_shape = tuple(int(d) for d in extractor.output_shape[1:])
    partial = cache_path.with_name(cache_path.stem + ".partial.npy")
    store = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(len(relpaths), *feature_shape))
    kept, skipped = [], []
    with ThreadPoolExecutor(max_workers=2) as pool:
        batches = [list(range(i, min(i + BATCH, len(relpaths)))) for i in range(0, len(relpaths), BATCH)]
        loads = pool.map(lambda batch: [read_or_reason(data_dir / relpaths[i], image_size) for i in batch], batches)
        for batch, images in zip(batches, loads):  # decoding of the next batch overlaps this one's inference
            good = [(i, img) for i, img in zip(batch, images) if not isinstance(img, str)]
            skipped += [(relpaths[i], img) for i, img in zip(batch, images) if isinstance(img, str)]
            if good:
                pixels = np.stack([img for _, img in good]).astype(np.float32)
                store[len(kept):len(kept) + len(good)] = extractor.predict_on_batch(pixels)
                kept += [i for i, _ in good]
            if progress:
                progress(batch[-1] + 1, len(relpaths))
    store.flush()
    del store
    os.replace(partial, cache_path)
    meta = {"paths": [relpaths[i] for i in kept], "labels": [int(labels[i]) for i in kept],
            "skipped": skipped, "feature_shape": list(feature_shape)}
    tmp = done_marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, done_marker)
    return read_cached(cache_path, done_marker)


def read_or_reason(path: Path, image_size):
    """The image as uint8 pixels, or the one-line reason it could not be read."""
    try:
        return load_image(path, image_size)
    except ImageError as err:
        return str(err)


def read_cached(cache_path: Path, marker: Path) -> FeatureSet:
    meta = json.loads(marker.read_text())
    features = np.load(cache_path, mmap_mode="r")[: len(meta["paths"])]
    return FeatureSet(features, tuple(meta["paths"]), np.asarray(meta["labels"], dtype=np.int64),
                      tuple(tuple(s) for s in meta["skipped"]))
