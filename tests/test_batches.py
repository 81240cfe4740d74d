"""Feeding cached features to the head: the in-memory (tf.data) and streamed (memmap) paths agree."""

import numpy as np
import pytest

import allx.train.batches
from allx.train.batches import FeatureBatches, feature_batches


@pytest.fixture
def cached(tmp_path):
    features = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float16, shape=(10, 2, 2, 3))
    features[:] = np.arange(120, dtype=np.float16).reshape(10, 2, 2, 3)
    return features, np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])


def batches_of(source):
    return [tuple(np.asarray(part) for part in batch) for batch in source]


def test_in_memory_and_streamed_batches_are_the_same(cached, monkeypatch):
    features, labels = cached
    in_memory = feature_batches(features, labels, 4, batch_size=4, shuffle=False, class_weights={0: 2.0, 1: 1, 2: 1, 3: 1})
    assert not isinstance(in_memory, FeatureBatches)
    monkeypatch.setattr(allx.train.batches, "IN_MEMORY_BYTES", 0)
    streamed = feature_batches(features, labels, 4, batch_size=4, shuffle=False, class_weights={0: 2.0, 1: 1, 2: 1, 3: 1})
    assert isinstance(streamed, FeatureBatches)
    got, expected = batches_of(in_memory), [streamed[i] for i in range(len(streamed))]
    assert len(got) == len(expected) == 3
    for (x, y, w), (sx, sy, sw) in zip(got, expected):
        assert x.dtype == np.float32 and np.array_equal(x, sx)
        assert np.array_equal(y, sy) and np.array_equal(w, sw)


def test_shuffled_batches_cover_every_row_once(cached):
    features, labels = cached
    rows = np.concatenate([x[:, 0, 0, 0] for x, _ in batches_of(feature_batches(features, labels, 4, 3, True, seed=1))])
    assert sorted(rows.tolist()) == [float(i * 12) for i in range(10)]


@pytest.mark.parametrize("streamed", [False, True])
def test_rows_pick_a_fold_of_one_cache_with_its_labels(cached, monkeypatch, streamed):
    features, labels = cached
    if streamed:
        monkeypatch.setattr(allx.train.batches, "IN_MEMORY_BYTES", 0)
    rows = np.array([7, 2, 9, 4])
    source = feature_batches(features, labels, 4, batch_size=3, shuffle=True, seed=2, rows=rows)
    assert isinstance(source, FeatureBatches) == streamed
    batches = [source[i] for i in range(len(source))] if streamed else batches_of(source)
    got = {int(x[0, 0, 0] // 12): int(y.argmax()) for xs, ys in batches for x, y in zip(xs, ys)}
    assert got == {int(r): int(labels[r]) for r in rows}
