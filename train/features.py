"""Backbone features computed once and cached on disk, so a frozen-base head trains in seconds.

With a frozen backbone, every epoch of a naive `model.fit` recomputes the same backbone outputs. Here
they are computed once per (file contents, labels, backbone, weights, image size, augmentation,
extractor code) and stored as a float16 .npy memmap:
a ResNet50 7x7x2048 map is 200 KB per image in float16, so 3,000 images are ~0.6 GB on disk and only
one batch at a time is in memory while the head trains.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allx.errors import DataError, ImageError
from allx.files import write_atomic
from allx.images import load_image, read_batches
from allx.jsonio import Fields, read_json

BATCH = 32


@dataclass(frozen=True)
class FeatureSet:
    """Cached features of some images: `features[i]` belongs to `paths[i]`; `skipped` could not be read."""

    features: np.ndarray  # memmap, float16, (n, *feature_shape)
    paths: tuple[str, ...]
    labels: np.ndarray  # int class indices, aligned with features
    skipped: tuple[tuple[str, str], ...]  # (relpath, reason)


EXTRACTOR_VERSION = 2  # bump when extract_features computes different numbers for the same inputs
EXTRACTOR_SOURCES = ("features.py", "backbones.py", "efficientnet_lite.py", "mobilenet_v2.py", "layers.py")


class CacheRebuilt(UserWarning):
    """A cache entry failed its checks on read and was computed again (the CLI prints it as a warning)."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("ALLX_CACHE_DIR", Path.home() / ".cache" / "allx")) / "features"


def cache_file(cache_dir: str | Path, key: str) -> Path:
    """Where the features of one cache key live (its .json marker beside it)."""
    return Path(cache_dir) / f"{key}.npy"


def cache_key(parts: dict) -> str:
    """A short hash of everything that changes the features (data, backbone, weights, size, file list)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def feature_cache_parts(data_dir: Path, relpaths, labels, classes, backbone: str, weights_id: str,
                        image_size, augmentation: dict | None = None, seed: int | None = None) -> dict:
    """Everything a cached entry depends on: each file's path and content hash, the class order and the
    label of every path, backbone, weights (name or file hash), image size, the caller's augmentation
    settings and the extractor's code. Labels are in the key because the entry stores them."""
    return {"files": content_hashes(data_dir, relpaths), "classes": list(classes),
            "labels": [int(label) for label in labels], "backbone": backbone, "weights": weights_id,
            "seed": seed, "size": [int(n) for n in image_size], "augmentation": augmentation or {},
            "extractor": extractor_code_version()}


def content_hashes(data_dir: Path, relpaths) -> str:
    """sha256 over (path, sha256 of its bytes) in order; a missing file is hashed as missing."""
    digest = hashlib.sha256()
    for relpath in relpaths:
        try:
            content = hashlib.sha256((Path(data_dir) / relpath).read_bytes()).hexdigest()
        except OSError:
            content = "unreadable"
        digest.update(f"{relpath}\0{content}\n".encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def extractor_code_version() -> str:
    """EXTRACTOR_VERSION plus a hash of the code that builds and runs the extractor."""
    here = Path(__file__).parent
    digest = hashlib.sha256(str(EXTRACTOR_VERSION).encode())
    for name in EXTRACTOR_SOURCES:
        if (here / name).is_file():
            digest.update((here / name).read_bytes())
    return digest.hexdigest()[:16]


def extract_features(extractor, data_dir: Path, relpaths, labels, image_size: tuple[int, int],
                     cache_path: Path, progress=None) -> FeatureSet:
    """Features of `relpaths` under data_dir from `extractor` (raw pixels in), cached at cache_path.

    A cached entry is used only when it passes `read_cached`'s checks; a damaged one is rebuilt with a
    CacheRebuilt warning. Unreadable images are skipped and listed, never fatal. `progress(done, total)`
    is called per batch.
    """
    done_marker = cache_path.with_suffix(".json")
    feature_shape = tuple(int(d) for d in extractor.output_shape[1:])
    if done_marker.exists() or cache_path.exists():
        try:
            return read_cached(cache_path, done_marker, relpaths, labels, feature_shape)
        except DataError as err:
            warnings.warn(f"feature cache rebuilt: {err}", CacheRebuilt, stacklevel=2)
            done_marker.unlink(missing_ok=True)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    partial = cache_path.with_name(f"{cache_path.stem}.{os.getpid()}.partial.npy")
    store = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(len(relpaths), *feature_shape))
    kept, skipped = [], []
    for batch in read_batches(data_dir, relpaths, image_size, BATCH, progress):  # next batch decodes meanwhile
        skipped += batch.unreadable
        if batch.indices:
            store[len(kept):len(kept) + len(batch.indices)] = extractor.predict_on_batch(
                batch.pixels.astype(np.float32))
            kept += batch.indices
    store.flush()
    del store
    os.replace(partial, cache_path)
    meta = {"paths": [relpaths[i] for i in kept], "labels": [int(labels[i]) for i in kept],
            "skipped": skipped, "feature_shape": list(feature_shape)}
    write_atomic(done_marker, json.dumps(meta))
    return read_cached(cache_path, done_marker, relpaths, labels, feature_shape)


def read_or_reason(path: Path, image_size):
    """The image as uint8 pixels, or the one-line reason it could not be read."""
    try:
        return load_image(path, image_size)
    except ImageError as err:
        return str(err)


def read_cached(cache_path: Path, marker: Path, relpaths, labels, feature_shape: tuple[int, ...],
                repeat: int = 1) -> FeatureSet:
    """The cached entry, checked against what the caller asked for; DataError when anything is off
    (a damaged or truncated file, other paths or labels, another feature shape, non-finite values)."""
    meta = Fields(read_json(marker, "feature cache"), f"feature cache {marker}")
    paths, cached_labels = meta.texts("paths"), meta.integers("labels", minimum=0)
    skipped = meta.value("skipped", "a list of [path, reason] pairs", list)
    if not all(isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s) for s in skipped):
        raise DataError(f"feature cache {marker}: field skipped is malformed, expected [path, reason] pairs")
    expected = {path: int(label) for path, label in zip(relpaths, labels)}
    unread = {s[0] for s in skipped}
    wanted_paths = [p for p in relpaths if p not in unread for _ in range(repeat)]  # repeat: views per image
    if list(paths) != wanted_paths or [expected[p] for p in paths] != list(cached_labels):
        raise DataError(f"feature cache {marker}: its paths or labels differ from the split's, expected the same")
    if tuple(meta.integers("feature_shape", minimum=1)) != tuple(feature_shape):
        raise DataError(f"feature cache {marker}: feature shape {meta.data['feature_shape']}, "
                        f"expected {list(feature_shape)}")
    try:
        features = np.load(cache_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"feature cache {cache_path}: unreadable ({err.__class__.__name__}: {err})") from None
    if features.dtype != np.float16 or features.shape[1:] != tuple(feature_shape) or len(features) < len(paths):
        raise DataError(f"feature cache {cache_path}: got {features.dtype} {features.shape}, "
                        f"expected float16 ({len(paths)}, {', '.join(map(str, feature_shape))})")
    features = features[: len(paths)]
    if not all(np.isfinite(features[i:i + BATCH]).all() for i in range(0, len(features), BATCH)):
        raise DataError(f"feature cache {cache_path}: holds NaN or infinite values, expected finite features")
    return FeatureSet(features, paths, np.asarray(cached_labels, dtype=np.int64),
                      tuple(tuple(s) for s in skipped))
