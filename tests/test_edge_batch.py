"""Batch classification: which paths a pattern names, input order kept, decoding ahead but bounded."""

import os
import sys
import threading

import numpy as np
import pytest
from edge_models import tiny_models
from PIL import Image

from allx.errors import DataError
from allx.edge_runner.batch import DECODE_NICENESS, classify_paths, expand_paths
from allx.edge_runner.model import EdgeModel


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for i, path in enumerate(["a/1.png", "a/2.jpg", "a/deep/3.png", "top.png"]):
        Image.new("RGB", (20, 20), (20 * i, 100, 200)).save(tmp_path / path)
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    return tmp_path


def names(items, root):
    return [(path.replace(str(root) + "/", ""), error is not None) for path, error in items]


def test_expand_folder_flat_and_recursive(tree):
    assert names(expand_paths([str(tree / "a")]), tree) == [("a/1.png", False), ("a/2.jpg", False)]
    assert names(expand_paths([str(tree / "a")], recursive=True), tree) == [
        ("a/1.png", False), ("a/2.jpg", False), ("a/deep/3.png", False)]


def test_expand_globs_files_and_problems(tree):
    # as the shell would: a/* names a/deep too, a folder, which gives its images
    assert names(expand_paths([f"{tree}/a/*"]), tree) == [("a/1.png", False), ("a/2.jpg", False),
                                                        ("a/deep/3.png", False)]
    assert names(expand_paths([f"{tree}/**/*.png"], recursive=True), tree) == [
        ("a/1.png", False), ("a/deep/3.png", False), ("top.png", False)]
    given = expand_paths([str(tree / "a" / "notes.txt"), str(tree / "missing.png"), str(tree / "empty"),
                          f"{tree}/*.gif"])
    assert names(given, tree)[:2] == [("a/notes.txt", False), ("missing.png", False)]  # fail when read
    assert "no image files in folder (use --recursive" in given[2][1] and "no files match" in given[3][1]
    assert len(expand_paths([str(tree / "top.png"), str(tree / "top.png"), str(tree)])) == 1


class CountingModel(EdgeModel):
    """The real model, counting how far decoding runs ahead of inference."""

    def __init__(self, model):
        self.__dict__.update(model.__dict__)
        self.lock = threading.Lock()
        self.decoded = 0
        self.ahead = []

    def load_pixels(self, path):
        pixels = super().load_pixels(path)
        with self.lock:
            self.decoded += 1
        return pixels

    def classify(self, pixels, top_k=1):
        with self.lock:
            self.ahead.append(self.decoded)
        return super().classify(pixels, top_k)


def test_order_kept_and_prefetch_bounded(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{i:02d}.png")
    (tmp_path / "05.png").write_bytes(b"broken")
    model = CountingModel(EdgeModel.load(tiny_models().int8))
    results, summary = classify_paths(model, [str(tmp_path)], workers=2, prefetch=3)
    assert [r.path for r in results] == [str(tmp_path / f"{i:02d}.png") for i in range(24)]
    assert results[5].error and all(r.prediction for i, r in enumerate(results) if i != 5)
    assert (summary.images, summary.classified, summary.failures) == (24, 23, 1)
    # when image k is classified, at most k + 1 (itself) + 3 (prefetch) images have been decoded
    for k, decoded in enumerate(model.ahead):
        index = k if k < 5 else k + 1
        assert decoded <= index + 1 + 3
    reference = EdgeModel.load(tiny_models().int8)
    first = reference.predict(reference.load_pixels(tmp_path / "00.png"))
    assert results[0].prediction.probabilities == pytest.approx(tuple(first))


class PriorityModel(EdgeModel):
    """The real model, noting the CPU priority (nice value) of each thread that decodes an image."""

    def __init__(self, model):
        self.__dict__.update(model.__dict__)
        self.seen = []

    def load_pixels(self, path):
        nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        self.seen.append((threading.current_thread() is threading.main_thread(), nice))
        return super().load_pixels(path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
def test_prefetched_decodes_run_at_the_lowest_priority(tmp_path):
    for i in range(12):
        Image.new("RGB", (32, 32), (10 * i, 90, 160)).save(tmp_path / f"{i:02d}.png")
    model = PriorityModel(EdgeModel.load(tiny_models().int8))
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    results, _ = classify_paths(model, [str(tmp_path)], workers=2, prefetch=4)
    in_pool = [nice for on_main, nice in model.seen if not on_main]
    on_main = [nice for on_main, nice in model.seen if on_main]  # decodes that had not started in time
    assert len(model.seen) == len(results) == 12 and in_pool
    assert set(in_pool) == {DECODE_NICENESS} and set(on_main) <= {before}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the interpreter's thread keeps its own


def test_nothing_to_classify(tmp_path):
    model = EdgeModel.load(tiny_models().int8)
    with pytest.raises(DataError, match="got no paths"):
        classify_paths(model, [])


def test_one_image_is_decoded_without_a_decode_thread(tmp_path):
    Image.new("RGB", (32, 32), (120, 90, 160)).save(tmp_path / "one.png")
    (tmp_path / "broken.png").write_bytes(b"broken")
    model = PriorityModel(EdgeModel.load(tiny_models().int8))
    decode_threads = []

    def note_threads(result):
        decode_threads.extend(t.name for t in threading.enumerate() if t.name.startswith("allx-decode"))

    results, summary = classify_paths(model, [str(tmp_path / "one.png")], on_result=note_threads)
    assert results[0].prediction is not None and [on_main for on_main, _ in model.seen] == [True]
    assert decode_threads == []
    results, _ = classify_paths(model, [str(tmp_path / "broken.png")])
    assert results[0].prediction is None and "broken.png" in results[0].error
    both, _ = classify_paths(model, [str(tmp_path)], on_result=note_threads)
    assert [r.prediction is not None for r in both] == [False, True] and decode_threads  # two: the pool runs
