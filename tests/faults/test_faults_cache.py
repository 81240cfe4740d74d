"""The feature cache: keyed by everything its content depends on, checked on read, rebuilt when damaged."""

import json
import warnings

import numpy as np
import pytest

from allx.train.features import CacheRebuilt, cache_key, extract_features, feature_cache_parts


class FakeExtractor:
    """Stands in for the Keras extractor: mean colour per image, so features are cheap and exact."""

    output_shape = (None, 3)

    def __init__(self):
        self.calls = 0

    def predict_on_batch(self, pixels):
        self.calls += 1
        return pixels.mean(axis=(1, 2))


@pytest.fixture
def images(synthetic_dir):
    paths = sorted(p.relative_to(synthetic_dir).as_posix() for p in synthetic_dir.rglob("*.jpg"))[::5]
    classes = sorted({p.split("/")[0] for p in paths})
    return synthetic_dir, paths, classes


def key_of(data, paths, classes, **changes):
    labels = [classes.index(p.split("/")[0]) for p in paths]
    parts = dict(backbone="efficientnet-lite0", weights_id="imagenet", image_size=(48, 48), augmentation=None)
    parts.update(changes)
    return cache_key(feature_cache_parts(data, paths, parts.pop("labels", labels), classes, **parts))


def test_key_covers_class_order_labels_content_and_settings(images, tmp_path):
    data, paths, classes = images
    base = key_of(data, paths, classes)
    assert key_of(data, paths, classes) == base
    reversed_classes = classes[::-1]
    assert key_of(data, paths, reversed_classes) != base, "reversed class order must not reuse cached labels"
    assert key_of(data, paths, classes, backbone="mobilenetv2") != base
    assert key_of(data, paths, classes, weights_id="abc123") != base
    assert key_of(data, paths, classes, image_size=(64, 64)) != base
    assert key_of(data, paths, classes, augmentation={"flip": True}) != base
    copy = tmp_path / "data"
    import shutil

    shutil.copytree(data, copy)
    assert key_of(copy, paths, classes) == base, "the key depends on content, not on where the data lives"
    (copy / paths[0]).write_bytes((copy / paths[1]).read_bytes())  # same name and size class, new content
    assert key_of(copy, paths, classes) != base


def extract(data, paths, labels, cache, extractor):
    return extract_features(extractor, data, paths, labels, (16, 16), cache)


def test_cached_entry_is_reused_when_it_checks_out(images, tmp_path):
    data, paths, classes = images
    labels = [classes.index(p.split("/")[0]) for p in paths]
    extractor = FakeExtractor()
    first = extract(data, paths, labels, tmp_path / "k.npy", extractor)
    calls = extractor.calls
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheRebuilt)
        again = extract(data, paths, labels, tmp_path / "k.npy", extractor)
    assert extractor.calls == calls
    assert np.array_equal(np.asarray(first.features), np.asarray(again.features))


@pytest.mark.parametrize("damage", ["json_garbage", "json_deep", "json_types", "npy_truncated", "npy_garbage",
                                    "npy_nan", "labels_differ"])
def test_damaged_cache_is_rebuilt_with_a_warning(images, tmp_path, damage):
    data, paths, classes = images
    labels = [classes.index(p.split("/")[0]) for p in paths]
    cache = tmp_path / "k.npy"
    good = extract(data, paths, labels, cache, FakeExtractor())
    expected = np.asarray(good.features).copy()
    marker = cache.with_suffix(".json")
    if damage == "json_garbage":
        marker.write_text("{not json")
    elif damage == "json_deep":
        marker.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "json_types":
        marker.write_text(json.dumps({"paths": "x", "labels": [1], "skipped": [], "feature_shape": [3]}))
    elif damage == "npy_truncated":
        cache.write_bytes(cache.read_bytes()[:100])
    elif damage == "npy_garbage":
        cache.write_bytes(b"garbage" * 20)
    elif damage == "npy_nan":
        stored = np.load(cache, mmap_mode="r+")
        stored[0, 0] = np.nan
        stored.flush()
        del stored
    elif damage == "labels_differ":
        meta = json.loads(marker.read_text())
        meta["labels"] = [(label + 1) % len(classes) for label in meta["labels"]]
        marker.write_text(json.dumps(meta))
    extractor = FakeExtractor()
    with pytest.warns(CacheRebuilt, match="feature cache rebuilt"):
        rebuilt = extract(data, paths, labels, cache, extractor)
    assert extractor.calls > 0, "a damaged entry is computed again, never trusted"
    assert np.array_equal(np.asarray(rebuilt.features), expected)
    assert list(rebuilt.labels) == labels
