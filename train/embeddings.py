"""Backbone embeddings of every image and the pairs that look alike: near-duplicates beyond the phash.

A perceptual hash catches re-captures of one field shot without moving the stage; a field shot again
after the stage moved a little (a shifted view) has a different hash but nearly the same backbone
embedding. Embeddings are the global average of EfficientNet-Lite0's last feature map (ImageNet
weights ship with the package, so this works offline), computed once per data set and cached on disk
like training features. They are centred on the data set's mean before L2 normalisation: every smear
shares a look (pale background, red cells), which puts any two raw embeddings of this data at cosine
~0.8 and different fields of one stain at 0.95+; centring removes that shared part so the cosine
measures what differs between fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from allx.errors import UsageError

EMBEDDING_BACKBONE = "efficientnet-lite0"
# Measured on the ALL data (benchmarks/results/neighbours.json; pairs looked at as images): at centred
# cosine >= 0.95 every pair is a shifted re-capture 1-3 file numbers apart; from 0.90 they are
# re-captures or other fields of the same smear (92% within 10 file numbers: one patient either way);
# below 0.90 pairs are mostly fields of different slides that share a stain (median 33+ files apart),
# and joining them chains whole classes together. See README "Patient-like splits".
SIMILARITY = 0.90
MAX_BLOCK = 1 << 22  # similarities computed per numpy step: bounds memory to ~16 MB for any data set size


@dataclass(frozen=True)
class Embeddings:
    """`vectors[i]` (centred, unit length, float32) belongs to `paths[i]`; `skipped` could not be read."""

    paths: tuple[str, ...]
    vectors: np.ndarray
    skipped: tuple[tuple[str, str], ...] = ()


def neighbour_method(similarity: float) -> dict:
    """How embedding neighbours were found, as split meta records it."""
    return {"embedding": f"{EMBEDDING_BACKBONE} (ImageNet) global average of the last feature map",
            "similarity": "cosine of embeddings centred on the data set's mean", "threshold": similarity,
            "grouping": "connected components of pairs at or above the threshold, within one class"}


def image_embeddings(data_dir: str | Path, relpaths, cache_dir: Path | None = None,
                     progress: Callable[[int, int], None] | None = None) -> Embeddings:
    """Embeddings of `relpaths` under data_dir, computed once and cached (unreadable images are skipped)."""
    from allx.train.features import extract_features

    relpaths = list(relpaths)
    extractor, size = make_embedder()
    labels = np.zeros(len(relpaths), dtype=np.int64)  # unused: embeddings carry no class
    found = extract_features(extractor, Path(data_dir), relpaths, labels, size,
                             embeddings_cache(data_dir, relpaths, cache_dir), progress)
    vectors = np.asarray(found.features, dtype=np.float32)
    vectors -= vectors.mean(axis=0)  # the shared smear look (see the module docstring)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return Embeddings(found.paths, vectors, found.skipped)


def make_embedder():
    """(the embedding model: raw pixels in, one vector per image out; its input size)."""
    import keras

    from allx.train.backbones import get_backbone

    backbone = get_backbone(EMBEDDING_BACKBONE)
    size = tuple(backbone.input_size)
    pixels = keras.Input(shape=(*size, 3))
    base = backbone.make_base("imagenet", (*size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(base(backbone.make_preprocessing()(pixels), training=False))
    return keras.Model(pixels, pooled, name="embedder"), size


def embeddings_cache(data_dir: str | Path, relpaths, cache_dir: Path | None = None) -> Path:
    """The cache entry of the embeddings of `relpaths` (one per data set, beside the feature cache)."""
    from allx.train.backbones import get_backbone
    from allx.train.features import cache_file, cache_key, default_cache_dir, feature_cache_parts

    relpaths = list(relpaths)
    backbone = get_backbone(EMBEDDING_BACKBONE)
    key = cache_key(feature_cache_parts(data_dir, relpaths, np.zeros(len(relpaths), dtype=np.int64), (),
                                        backbone.name, "imagenet", tuple(backbone.input_size), {"pooled": "mean"}))
    return cache_file((Path(cache_dir) if cache_dir else default_cache_dir()).parent / "embeddings", key)


def similar_pairs(vectors: np.ndarray, threshold: float = SIMILARITY) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for i < j whose unit vectors have cosine similarity >= threshold."""
    check_similarity(threshold)
    n = len(vectors)
    rows = max(1, MAX_BLOCK // max(n, 1))
    found = []
    for start in range(0, n, rows):
        block = vectors[start:start + rows] @ vectors.T
        i, j = np.nonzero(block >= threshold)
        i = i + start
        keep = j > i
        found += zip(i[keep].tolist(), j[keep].tolist(), block[i[keep] - start, j[keep]].tolist())
    return found


def check_similarity(threshold: float) -> float:
    if not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise UsageError(f"--similarity: got {threshold!r}, expected a cosine similarity in (0, 1]")
    return float(threshold)
