"""One worker's training in a multi-worker run (the child process of train.multiworker), read top to
bottom like train.trainer.train_into, whose steps it reuses: the split (made on the chief, from
embeddings extracted in shares when it joins embedding neighbours), the features (sharded), the head
(once), and on the chief the evaluation and the run files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from allx import layout
from allx.errors import DataError
from allx.files import write_atomic
from allx.train.augment import Augmentation, parse_augmentation
from allx.train.backbones import get_backbone
from allx.train.cluster import Cluster
from allx.train.dataset import scan_dataset
from allx.train.distribute import describe_strategy, make_strategy
from allx.train.embeddings import embeddings_cache, make_embedder
from allx.train.features import cache_file, default_cache_dir
from allx.train.sharding import all_gather, extract_share, gather_share, read_if_cached, shares_of, write_gathered
from allx.train.split import read_split
from allx.train.trainer import (build_extractor, check_some_readable, feature_cache_key, finish_run,
                                fit_head_on_features, full_model, new_head, prepare_split, write_labels)

SUBSETS = ("train", "val", "test")


def train_worker_into(config, cluster: Cluster, run_dir: Path, progress):
    """The run as worker `cluster.index`, written into run_dir: (metrics, history, skipped) on the chief;
    None on the others, which are done once the chief needs nothing more from them."""
    import keras
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # (the all-gathers of uneven chunks retrace; that is expected)
    threads = cluster.threads_per_worker()
    limit_threads(threads)
    strategy = make_strategy("multiworker")  # before any other TF operation; every peer has joined already
    keras.utils.set_random_seed(config.seed)
    backbone = get_backbone(config.backbone)
    embeddings = sharded_embeddings(strategy, cluster, config, progress)
    split = shared_split(strategy, cluster, config, run_dir)
    size = (config.image_size, config.image_size) if config.image_size else tuple(backbone.input_size)
    weights = config.weights or backbone.default_weights

    # The extractor is built outside the strategy's scope: inference needs no mirrored variables, and a
    # model built inside it would turn every predict into a collective of all the workers.
    pixels, _, feature_map, extractor = build_extractor(backbone, weights, size, config.features)
    augmentation = parse_augmentation(config.augment, config.augment_copies)
    cache_dir = Path(config.cache_dir) if config.cache_dir and cluster.is_chief else default_cache_dir()
    features, phases, counts = {}, {}, {}
    for name in (n for n in SUBSETS if split.subset(n)):
        features[name], phases[name], counts[name] = sharded_features(
            strategy, cluster, extractor, config, split, name, size, weights, cache_dir, progress,
            augmentation if name == "train" and augmentation.kinds else None)
    if not cluster.is_chief:
        return None  # the head is fitted on the chief alone: this worker's part is done
    check_some_readable(features)

    n_classes, shape = len(split.classes), extractor.output_shape[1:]
    train = (features["train"].features, features["train"].labels, None)
    val = (features["val"].features, features["val"].labels, None) if "val" in features else None
    head = new_head(config, shape, n_classes)
    history = fit_head_on_features(config, head, train, val, n_classes, "head", progress)
    write_labels(split.classes, run_dir / layout.LABELS)
    model = full_model(backbone, pixels, head(feature_map))
    distribution = {**describe_strategy(strategy), "workers": cluster.size, "threads_per_worker": threads,
                    "phases": {"split": "chief", **({"embeddings": embeddings} if embeddings else {}),
                               "features": phases, "head": "chief", "evaluation": "chief"},
                    "images_per_worker": counts}
    result = finish_run(config, backbone, weights, size, split, (model, head), features, history, run_dir,
                        distribution)
    return result.metrics, result.history, result.skipped


def limit_threads(threads: int | None) -> None:
    """TensorFlow's intra- and inter-op thread pools at `threads` each (None: its default, every CPU).
    Workers sharing a host split its CPUs: at TensorFlow's default each would run a pool as wide as the
    host, and their threads would take the CPUs from each other. Must run before TensorFlow starts."""
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def sharded_embeddings(strategy, cluster: Cluster, config, progress) -> str | None:
    """Before a split that joins embedding neighbours: the embeddings of every image of the data set (what
    train.groups embeds) in the chief's embedding cache, where its split finds them; extracted in shares
    unless the chief has them already. How they were made (a PHASES code), None when the split needs none."""
    if config.split_path or config.similarity is None:
        return None
    relpaths = scan_dataset(config.data_dir).paths()
    check_same(strategy, json.dumps(relpaths), "data set (the scanned image files and their classes)")
    extractor, size = make_embedder()
    report = (lambda done, total: progress("embeddings", done, total)) if progress else None
    _, phase, _ = gather_into_cache(strategy, cluster, extractor, Path(config.data_dir), relpaths,
                                    np.zeros(len(relpaths), np.int64), size, None, config.seed,
                                    embeddings_cache(config.data_dir, relpaths), report)
    return phase


def shared_split(strategy, cluster: Cluster, config, run_dir: Path):
    """The split, made once on the chief (train.trainer.prepare_split) and sent to the other workers, which
    check it against their own data folder (every file there, in its class)."""
    split = prepare_split(config, run_dir) if cluster.is_chief else None
    text = broadcast_text(strategy, (run_dir / layout.SPLIT).read_text() if cluster.is_chief else "")
    if cluster.is_chief:
        return split
    write_atomic(run_dir / layout.SPLIT, text)
    return read_split(run_dir / layout.SPLIT, config.data_dir)


def broadcast_text(strategy, text: str) -> str:
    """The chief's `text` on every worker (through the strategy's all-gather, as int32 code points)."""
    codes = np.frombuffer(text.encode(), np.uint8).astype(np.int32)
    lengths = all_gather(strategy, np.array([len(codes)], np.int64))
    padded = np.zeros(int(lengths.max()), np.int32)
    padded[:len(codes)] = codes
    chief = all_gather(strategy, padded).reshape(len(lengths), -1)[0][:int(lengths[0])]
    return chief.astype(np.uint8).tobytes().decode()


def check_same(strategy, text: str, what: str) -> None:
    """Every worker has the same `text`: DataError on all of them if not."""
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.int64)
    digests = all_gather(strategy, digest)
    differ = [index for index, value in enumerate(digests) if value != digests[0]]
    if differ:
        raise DataError(f"worker(s) {', '.join(map(str, differ))} have another {what} than the chief: got "
                        "different files, expected the same data folder and options on every host")


def sharded_features(strategy, cluster: Cluster, extractor, config, split, subset, size, weights, cache_dir: Path,
                     progress, augmentation: Augmentation | None):
    """(the subset's FeatureSet on the chief, None elsewhere; how it was made; images per worker): extracted
    in shares and all-gathered (train.sharding), or read from the chief's cache."""
    relpaths, labels = list(split.subset(subset)), split.labels(subset)
    cache_path = cache_file(cache_dir, feature_cache_key(config, split, subset, size, weights, augmentation))
    report = (lambda done, total: progress(f"features {subset}", done, total)) if progress else None
    return gather_into_cache(strategy, cluster, extractor, Path(config.data_dir), relpaths, labels, size,
                             augmentation, config.seed, cache_path, report)


def gather_into_cache(strategy, cluster: Cluster, extractor, data_dir: Path, relpaths, labels, size,
                      augmentation: Augmentation | None, seed: int, cache_path: Path, report):
    """(the FeatureSet of `relpaths` through `extractor` on the chief, None elsewhere; "cached" or
    "sharded"; images per worker): the chief's cache entry at `cache_path` when it has one, else
    extracted in shares, all-gathered and stored there by the chief."""
    views = augmentation.views_per_image if augmentation else 1
    shape = tuple(int(d) for d in extractor.output_shape[1:])
    cached = read_if_cached(cache_path, relpaths, labels, shape, views) if cluster.is_chief else None
    chief_has = bool(all_gather(strategy, np.array([cached is not None], np.int32))[0])
    if chief_has:  # nobody extracts; only the chief needs the features
        return cached, "cached", [len(relpaths)] + [0] * (cluster.size - 1)
    shares = shares_of(len(relpaths), cluster.size)
    share_path = partial_path(cache_path, "share")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mine = extract_share(extractor, data_dir, relpaths, shares[cluster.index], size,
                             augmentation or Augmentation(), seed, share_path, report)
        store = partial_path(cache_path, "") if cluster.is_chief else None
        readable = gather_share(strategy, mine, shares, views, shape, store)
        gathered = write_gathered(cache_path, relpaths, labels, readable, store, views, shape, augmentation,
                                  data_dir, size) if cluster.is_chief else None
    finally:
        share_path.unlink(missing_ok=True)
    return gathered, "sharded", [len(s) for s in shares]


def partial_path(cache_path: Path, kind: str) -> Path:
    """A file of this process beside a cache entry (train.multiworker removes a killed child's)."""
    return cache_path.with_name(f"{cache_path.stem}.{os.getpid()}.{kind + '.' if kind else ''}partial.npy")
