"""Batch classification: which paths a pattern names, input order kept, decoding ahead but bounded."""

import json
import os
import shutil
import sys
import threading
import time

import numpy as np
import pytest
from edge_models import LABELS, tiny_models
from PIL import Image

from allx.errors import DataError
from allx.edge_runner import model as model_module
from allx.edge_runner.batch import DECODE_NICENESS, InOrder, classify_paths, expand_paths, replica_count, replica_results
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.runtime import make_interpreter


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
    model = CountingModel(EdgeModel.load(tiny_models().int8, threads=1))  # one interpreter: decodes run ahead of it
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
    model = PriorityModel(EdgeModel.load(tiny_models().int8, threads=1))
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
    pool_threads = []

    def note_threads(result):
        pool_threads.extend(t.name for t in threading.enumerate() if t.name.startswith(("allx-decode", "allx-replica")))

    results, summary = classify_paths(model, [str(tmp_path / "one.png")], on_result=note_threads)
    assert results[0].prediction is not None and [on_main for on_main, _ in model.seen] == [True]
    assert pool_threads == []
    results, _ = classify_paths(model, [str(tmp_path / "broken.png")])
    assert results[0].prediction is None and "broken.png" in results[0].error
    both, _ = classify_paths(model, [str(tmp_path)], on_result=note_threads)
    assert [r.prediction is not None for r in both] == [False, True] and pool_threads  # two: a pool runs


@pytest.fixture(scope="module")
def replica_case(tmp_path_factory):
    """(model folder, image folder): the tiny two-output model with a Mahalanobis out-of-distribution check on its
    8-wide embedding, thresholded at the median score so that some images are flagged; 12 images, 05 broken."""
    tiny = tiny_models()
    folder = tmp_path_factory.mktemp("replica_model")
    shutil.copy(tiny.two_outputs, folder / "model.tflite")
    bare = EdgeModel.load(folder / "model.tflite", labels=list(LABELS))
    embedding = next(o["name"] for o in bare.interpreter.get_output_details() if o["name"] != bare.output["name"])
    rng = np.random.default_rng(3)
    np.savez(folder / "ood_stats.npz", mean=rng.normal(size=8), projection=rng.normal(size=(8, 3)),
             class_means=rng.normal(size=(4, 3)))
    manifest = {"format": "allx-tflite/1", "model_file": "model.tflite", "labels": list(LABELS),
                "outputs": {"probabilities": {"name": bare.output["name"]}, "embedding": {"name": embedding}},
                "ood": {"method": "mahalanobis", "threshold": 0.0, "stats_file": "ood_stats.npz"}}
    (folder / "model.json").write_text(json.dumps(manifest))
    images = tmp_path_factory.mktemp("replica_images")
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(images / f"{i:02d}.png")
    (images / "05.png").write_bytes(b"broken")
    results, _ = classify_paths(EdgeModel.load(folder, threads=1), [str(images)])
    manifest["ood"]["threshold"] = float(np.median([r.prediction.ood_score for r in results if r.prediction]))
    (folder / "model.json").write_text(json.dumps(manifest))
    return folder, images


def same_results(ours, theirs) -> None:
    assert [r.path for r in ours] == [r.path for r in theirs]
    for one, other in zip(ours, theirs):
        assert (one.error is None, one.prediction is None) == (other.error is None, other.prediction is None)
        if one.prediction is not None:
            p, q = one.prediction, other.prediction
            assert [label for label, _ in p.top_k] == [label for label, _ in q.top_k] and p.ood == q.ood
            assert p.probabilities == pytest.approx(q.probabilities, abs=1e-6)
            assert p.ood_score == pytest.approx(q.ood_score, rel=1e-6)


@pytest.mark.parametrize("tta", [False, True])
def test_replicas_give_the_sequential_results_in_input_order(replica_case, monkeypatch, tta):
    folder, images = replica_case
    made = []

    def counting_make_interpreter(*args, **kwargs):
        made.append(kwargs.get("content") is not None)
        return make_interpreter(*args, **kwargs)

    monkeypatch.setattr(model_module, "make_interpreter", counting_make_interpreter)
    sequential, _ = classify_paths(EdgeModel.load(folder, threads=1, tta=tta), [str(images)], top_k=2)
    assert len(made) == 1  # one thread: the model's own interpreter, no replica
    replicas = []
    model = EdgeModel.load(folder, threads=3, tta=tta)
    results, summary = classify_paths(model, [str(images)], top_k=2,
                                      on_result=lambda _: replicas.extend(
                                          t.name for t in threading.enumerate() if t.name.startswith("allx-replica")))
    assert len(made) == 1 + 1 + 3 and all(made)  # the model, then one replica per thread, all from its bytes
    assert {name.rsplit("_", 1)[0] for name in replicas} == {"allx-replica"}
    assert [r.path for r in results] == [str(images / f"{i:02d}.png") for i in range(12)]
    assert "05.png" in results[5].error and (summary.classified, summary.failures) == (11, 1)
    flagged = [r.prediction.ood for r in results if r.prediction]
    assert any(flagged) and not all(flagged)
    same_results(results, sequential)


class TrackingModel(EdgeModel):
    """The real model; its replicas (shallow copies) share `log`: the decodes begun and the interpreters used."""

    def __init__(self, model):
        self.__dict__.update(model.__dict__)
        self.log = {"decodes": 0, "interpreters": set()}
        self.lock = threading.Lock()

    def load_pixels(self, path):
        with self.lock:
            self.log["decodes"] += 1
        return super().load_pixels(path)

    def classify(self, pixels, top_k=1):
        with self.lock:
            self.log["interpreters"].add(id(self.interpreter))
        return super().classify(pixels, top_k)


def test_replicas_keep_a_bounded_number_in_flight_and_leave_the_model_alone(replica_case, tmp_path):
    folder, images = replica_case
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    model = TrackingModel(EdgeModel.load(copy, threads=2))
    (copy / "model.tflite").unlink()  # the replicas are made from the bytes read at load: the file is not opened
    decoded_when_yielded = []
    results, _ = classify_paths(model, [str(images)], prefetch=1,
                                on_result=lambda _: decoded_when_yielded.append(model.log["decodes"]))
    assert len(results) == 12 and results[0].prediction is not None
    # 2 replicas + prefetch 1: when result k is yielded, at most k + 1 + 3 images have been decoded
    assert all(decoded <= k + 1 + 3 for k, decoded in enumerate(decoded_when_yielded))
    assert len(model.log["interpreters"]) == 2 and id(model.interpreter) not in model.log["interpreters"]


def test_one_thread_or_the_edge_tpu_keeps_one_interpreter(replica_case):
    folder, images = replica_case
    items = [(str(path), None) for path in sorted(images.iterdir())]
    model = EdgeModel.load(folder, threads=4)
    assert replica_count(model, items) == 4 and replica_count(model, items[:2] + [("x", "no files")]) == 2
    assert replica_count(EdgeModel.load(folder, threads=1), items) == 1
    model.delegate = "edgetpu"  # one device: interpreters would queue for it
    assert replica_count(model, items) == 1


def run_in_order(items, work, window):
    """InOrder with 3 worker threads, each serving work(item)."""
    order = InOrder(items, window)
    threads = [threading.Thread(target=order.serve, args=(work,), daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    return order, threads


def test_in_order_yields_in_input_order_within_its_window():
    taken_when_yielded = []

    def slow_first(item):
        if item == 0:
            time.sleep(0.05)  # the others finish first; the window keeps them from running far ahead
        return item * 10

    order, threads = run_in_order(list(range(20)), slow_first, window=4)
    results = []
    for result in order.results():
        taken_when_yielded.append(order.next)
        results.append(result)
    order.stop()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [10 * i for i in range(20)]
    assert all(taken <= (k + 1) + 4 for k, taken in enumerate(taken_when_yielded))  # yielded + window
    assert not any(thread.is_alive() for thread in threads)


def test_in_order_raises_a_workers_failure_in_its_place_and_stops_early():
    def fails_at_5(item):
        if item == 5:
            raise RuntimeError("interpreter failed on item 5")
        return item

    order, threads = run_in_order(list(range(50)), fails_at_5, window=4)
    seen = []
    with pytest.raises(RuntimeError, match="item 5"):
        for result in order.results():
            seen.append(result)
    for thread in threads:
        thread.join(timeout=10)
    assert seen == [0, 1, 2, 3, 4] and not any(thread.is_alive() for thread in threads)
    assert order.next < 50  # the other workers stopped taking items


def test_replicas_stop_when_the_caller_stops_reading(replica_case):
    folder, images = replica_case
    model = EdgeModel.load(folder, threads=2)
    items = [(str(path), None) for path in sorted(images.iterdir())]
    results = replica_results(model, items, 1, 2, prefetch=1)
    first = next(results)
    assert first.path == items[0][0]
    results.close()  # e.g. the caller hit Ctrl-C: the workers finish their image and end
    assert not [t for t in threading.enumerate() if t.name.startswith("allx-replica")]
