"""Classify many images: expand files/folders/globs, then classify on one-thread replicas side by side (or with
one interpreter while the next images are decoded)."""

from __future__ import annotations

import glob
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from allx.errors import DataError, ImageError
from allx.images import is_image_file
from allx.edge_runner.manifest_check import REJECTED
from allx.edge_runner.model import EdgeModel, Prediction
from allx.files import write_csv

GLOB_CHARS = frozenset("*?[")
DECODE_NICENESS = 19  # the lowest CPU priority: a prefetched decode only takes a core the interpreter leaves idle


@dataclass(frozen=True)
class ImageResult:
    path: str
    prediction: Prediction | None = None
    error: str | None = None


@dataclass(frozen=True)
class BatchSummary:
    images: int
    classified: int
    failures: int
    flagged_ood: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.classified / self.seconds if self.seconds > 0 else 0.0


def expand_paths(patterns: Sequence[str], recursive: bool = False) -> list[tuple[str, str | None]]:
    """(path, None) per image to classify and (pattern, error) per argument that names nothing.

    A file is taken as given (a non-image then fails on its own); a folder gives its image files
    (with `recursive`, those of its sub-folders too); a glob gives its image matches, folders expanded
    (`**` spans folders with `recursive`).
    """
    items: list[tuple[str, str | None]] = []
    for pattern in patterns:
        if GLOB_CHARS & set(pattern) and not os.path.exists(pattern):
            matches = sorted(glob.glob(pattern, recursive=recursive))
            if not matches:
                items.append((pattern, f"{pattern}: no files match"))
            for match in matches:
                items.extend(expand_one(Path(match), recursive, from_glob=True))
        else:
            items.extend(expand_one(Path(pattern), recursive, from_glob=False))
    return list(dict.fromkeys(items))  # an image named twice (a folder and a glob of it) is classified once


def expand_one(path: Path, recursive: bool, from_glob: bool) -> list[tuple[str, str | None]]:
    if path.is_dir():
        walk = path.rglob("*") if recursive else path.iterdir()
        images = sorted((p for p in walk if is_image_file(p)), key=lambda p: str(p))
        if not images and not from_glob:
            hint = "" if recursive else " (use --recursive for sub-folders)"
            return [(str(path), f"{path}: no image files in folder{hint}")]
        return [(str(p), None) for p in images]
    if from_glob and not is_image_file(path):
        return []  # a glob like data/* also matches notes and hidden files: skip them quietly
    return [(str(path), None)]


def classify_paths(model: EdgeModel, patterns: Sequence[str], top_k: int = 1, recursive: bool = False,
                   workers: int | None = None, prefetch: int | None = None,
                   on_result: Callable[[ImageResult], None] | None = None) -> tuple[list[ImageResult], BatchSummary]:
    """Classify every image the patterns name; a bad image becomes an error result, never stops the batch."""
    if top_k < 1:
        raise DataError(f"got --top-k {top_k}, expected a number >= 1")
    items = expand_paths(patterns, recursive)
    if not items:
        raise DataError("got no paths, expected image files, folders or globs")
    model.require_labels()
    results = []
    start = time.perf_counter()
    for result in iterate_results(model, items, top_k, workers, prefetch):
        results.append(result)
        if on_result is not None:
            on_result(result)
    seconds = time.perf_counter() - start
    return results, summarize(results, seconds)


def iterate_results(model: EdgeModel, items: list[tuple[str, str | None]], top_k: int,
                    workers: int | None, prefetch: int | None) -> Iterator[ImageResult]:
    """Results in input order, yielded on this thread; a bad image is an error result and the batch goes on.

    One image has nothing to overlap with: it is decoded and classified on this thread, and no thread is
    started (a cold start's first result). Several images on the CPU with a model given more than one thread
    (`model.threads`, all cores unless --threads says otherwise) run on that many one-thread replicas of the
    model side by side (`replica_results`). Otherwise (one thread, or the Edge TPU, one device the replicas
    would only queue for) the model's own interpreter classifies them while the next are decoded ahead
    (`prefetched_results`)."""
    if len(items) == 1:
        path, error = items[0]
        yield ImageResult(path, error=error) if error else classify_decoded(model, path, top_k, model.load_pixels)
        return
    replicas = replica_count(model, items)
    if replicas > 1:
        yield from replica_results(model, items, top_k, replicas, prefetch)
    else:
        yield from prefetched_results(model, items, top_k, workers, prefetch)


def replica_count(model: EdgeModel, items: list[tuple[str, str | None]]) -> int:
    """One replica per thread the model was given, and no more than there are images to classify; 1 (no
    replicas) for a model on the Edge TPU."""
    if model.delegate != "cpu":
        return 1
    return max(1, min(model.threads, sum(1 for _, error in items if error is None)))


def replica_results(model: EdgeModel, items: list[tuple[str, str | None]], top_k: int, replicas: int,
                    prefetch: int | None) -> Iterator[ImageResult]:
    """Results in input order from `replicas` worker threads, each with its own one-thread replica of `model`
    (EdgeModel.replica: the same bytes and card, nothing read again) that decodes and classifies the images it
    takes. Decoding (Pillow) and invoke() both release the GIL, so the workers run on all cores at once.

    On a small model one interpreter's thread pool spends CPU waiting inside every invoke (on 2 cores, int8
    Lite0 took 6.8 ms of CPU per invoke with 2 threads, 6.0-6.2 ms with 1), and the decodes had to be squeezed
    in between its invokes; a one-thread interpreter per core does no such waiting, and decodes in turn on
    its own core. Each image still runs whole on one interpreter, so its result, its out-of-distribution
    score (read from that interpreter's embedding) and its tta views are exactly the sequential ones; its
    latency_ms is that replica's quantize + invoke + dequantize, on one thread.

    The workers take the next image themselves (`InOrder.take`): they never wait for this thread to hand
    out work. Handing out one future per image from here cost 5-6% of the folder's throughput on 2 cores:
    this thread had to be scheduled, and take the GIL, between every two images before a worker could go
    on. At most `replicas + prefetch` images are taken and not yet yielded at once. The replicas are made here,
    one after the other (a model load redirects the process's stderr for a moment)."""
    window = InOrder(items, replicas + max(1, prefetch or 4 * replicas))

    def classify_item(item: tuple[str, str | None], replica: EdgeModel) -> ImageResult:
        path, error = item
        return ImageResult(path, error=error) if error else classify_decoded(replica, path, top_k, replica.load_pixels)

    workers = [threading.Thread(target=window.serve, args=(classify_item, model.replica(threads=1)),
                                name=f"allx-replica_{k}", daemon=True) for k in range(replicas)]
    for worker in workers:
        worker.start()
    try:
        yield from window.results()
    finally:
        window.stop()
        for worker in workers:
            worker.join()


@dataclass(frozen=True)
class Failed:
    error: BaseException


class InOrder:
    """Items taken by worker threads in input order, their results yielded in input order by the caller.

    A worker runs `serve(task, *args)`: task(item, *args) for each item it takes, until `stop()`. It blocks
    while `window` items are taken and not yet yielded, and once every item is taken. `results()` yields the
    results in input order, on the caller's thread. A task's exception is raised there in the place of its
    result (the results before it are yielded first), and no worker takes another item."""

    def __init__(self, items: Sequence, window: int):
        self.items = items
        self.next = 0  # the next index to take
        self.yielded = 0  # results yielded so far
        self.window = window
        self.done: dict[int, object] = {}
        self.stopped = False
        self.changed = threading.Condition()

    def take(self) -> Iterator[tuple[int, object]]:
        while True:
            with self.changed:
                # a worker with nothing left to take waits for stop(): it lives as long as the results
                self.changed.wait_for(lambda: self.stopped or (self.next < len(self.items)
                                                               and self.next - self.yielded < self.window))
                if self.stopped:
                    return
                index, self.next = self.next, self.next + 1
            yield index, self.items[index]

    def serve(self, task: Callable, *args) -> None:
        for index, item in self.take():
            try:
                result = task(item, *args)
            except BaseException as err:  # raised on the caller's thread by results(), in this item's place
                self.put(index, Failed(err))
                self.stop()
                return
            self.put(index, result)

    def put(self, index: int, result: object) -> None:
        with self.changed:
            self.done[index] = result
            if index == self.yielded:
                self.changed.notify_all()

    def results(self) -> Iterator[object]:
        for index in range(len(self.items)):
            with self.changed:
                # every item before a failed one was taken before it, so its result comes
                self.changed.wait_for(lambda: index in self.done)
                result = self.done.pop(index)
                self.yielded = index + 1
                self.changed.notify_all()
            if isinstance(result, Failed):
                raise result.error
            yield result

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify_all()


def prefetched_results(model: EdgeModel, items: list[tuple[str, str | None]], top_k: int,
                       workers: int | None, prefetch: int | None) -> Iterator[ImageResult]:
    """Results in input order. The next images are decoded in a small thread pool (Pillow releases the GIL),
    at most `prefetch` ahead, while the interpreter runs on this thread (it is not thread-safe).

    The interpreter may run a thread per core. Decodes at the same priority preempted those threads
    and made the overlapped loop slower than a plain sequential one (0.82x of bare invoke() against 0.84x
    on a 2-core machine), so the decode threads run at the lowest priority and use only the idle time
    between and inside invokes. An image whose decode has not started when its turn comes is decoded on this
    thread instead, so the loop never waits for a starved decode before it begins."""
    workers = workers or min(4, os.cpu_count() or 1)
    prefetch = max(1, prefetch or 2 * workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="allx-decode",
                            initializer=lower_thread_priority) as pool:
        for path, error, future in submitted_in_order(pool, items, model.load_pixels, prefetch):
            if error:
                yield ImageResult(path, error=error)
                continue
            yield classify_decoded(model, path, top_k,
                                   lambda path: model.load_pixels(path) if future.cancel() else future.result())


def submitted_in_order(pool: ThreadPoolExecutor, items: list[tuple[str, str | None]], task: Callable[[str], object],
                       ahead: int) -> Iterator[tuple[str, str | None, Future | None]]:
    """(path, error, the future of `task(path)`, None for an item that is already an error) in input order. Each
    item's task is submitted `ahead` items before its turn, so at most `ahead` more are under way meanwhile."""
    todo = iter(items)
    pending: deque = deque()

    def submit_next() -> None:
        for path, error in todo:
            pending.append((path, error, None if error else pool.submit(task, path)))
            return

    for _ in range(ahead):
        submit_next()
    while pending:
        entry = pending.popleft()
        submit_next()
        yield entry


def classify_decoded(model: EdgeModel, path: str, top_k: int, decode: Callable[[str], object]) -> ImageResult:
    """The result of one image whose pixels `decode(path)` gives; an unreadable image is an error result."""
    try:
        pixels = decode(path)
    except ImageError as err:
        return ImageResult(path, error=str(err))
    return ImageResult(path, prediction=model.classify(pixels, top_k))


def lower_thread_priority() -> None:
    """Give the calling thread DECODE_NICENESS. Linux keeps a nice value per thread; elsewhere a thread id is
    no process id, so the thread keeps its priority (the overlap then only costs what it did before)."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)
        except OSError:  # a sandbox may refuse it: decoding still works, at the usual priority
            pass


def summarize(results: list[ImageResult], seconds: float) -> BatchSummary:
    classified = [r for r in results if r.prediction is not None]
    flagged = sum(1 for r in classified if r.prediction.ood)
    return BatchSummary(len(results), len(classified), len(results) - len(classified), flagged, seconds)


def model_fields(model: EdgeModel | None) -> dict:
    """What every result record says about the model: its sha256, and the features it runs without (if any)."""
    if model is None:
        return {}
    fields = {"model_sha256": model.sha256}
    if model.card.features_off:
        fields["features_off"] = list(model.card.features_off)
    if model.card.overridden:
        fields["metadata_overrode"] = list(model.card.overridden)
    return fields


def result_record(result: ImageResult, with_ood: bool = False, model: EdgeModel | None = None) -> dict:
    """The --json line of one result: {"path","label","score","top_k","latency_ms"} or {"path","error"},
    then `model_fields` of `model`."""
    if result.prediction is None:
        return {"path": result.path, "error": result.error, **model_fields(model)}
    p = result.prediction
    record = {"path": result.path, "label": p.label, "score": round(p.score, 6),
              "top_k": [{"label": label, "score": round(score, 6)} for label, score in p.top_k],
              "latency_ms": round(p.latency_ms, 3)}
    if with_ood:
        record["ood"] = p.ood
        record["ood_score"] = None if p.ood_score is None else round(p.ood_score, 6)
    return {**record, **model_fields(model)}


def write_results_csv(path, results: Sequence[ImageResult], with_ood: bool = False, model_sha256: str | None = None,
                      rejected: bool = False):
    """One row per image: path, label, score, top_k ("label:score;..."), latency_ms, error [, ood, ood_score]
    [, model_sha256] [, model_status: "rejected" on every row when a rejected model ran by --allow-rejected]."""

    header = ["path", "label", "score", "top_k", "latency_ms", "error"] + (["ood", "ood_score"] if with_ood else [])
    header += ["model_sha256"] if model_sha256 else []
    header += ["model_status"] if rejected else []
    rows = []
    for result in results:
        p = result.prediction
        row = [result.path, "", "", "", "", result.error or ""] if p is None else [
            result.path, p.label, f"{p.score:.6f}", ";".join(f"{label}:{score:.6f}" for label, score in p.top_k),
            f"{p.latency_ms:.3f}", ""]
        if with_ood:
            row += ["", ""] if p is None or p.ood is None else [str(p.ood).lower(), f"{p.ood_score:.6f}"]
        rows.append(row + ([model_sha256] if model_sha256 else []) + ([REJECTED] if rejected else []))
    return write_csv(path, header, rows)
