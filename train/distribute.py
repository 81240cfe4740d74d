"""The tf.distribute strategy for the image-based phases (augmented feature extraction, fine-tuning).

    auto         several hosts when TF_CONFIG is set; else every GPU when there are two or more;
                 else the default single-device strategy (nothing changes)
    mirrored     MirroredStrategy: one host, every GPU (every logical CPU device when there is no GPU)
    multiworker  MultiWorkerMirroredStrategy: several hosts, each described by the TF_CONFIG environment
                 variable (one worker alone when it is unset); with two or more workers, train.multiworker
                 runs the whole training: features sharded, the head fitted once (see PHASES)

The model is built, compiled and trained inside `strategy.scope()`; Keras then splits each batch over
the replicas. TensorFlow wants a multi-worker strategy created before any other TF operation, so
train_model makes it first.
"""

from __future__ import annotations

import os

from allx.errors import UsageError

STRATEGIES = ("auto", "mirrored", "multiworker")

# How each phase of a multi-worker run was split (train_config.json's distribution.phases carries the codes).
PHASES = {
    "sharded": "sharded: worker k extracted the images i with i % workers == k; all-gathered by the strategy",
    "cached": "read from the chief's cache, nothing extracted",
    "chief": "once, on the chief (the split is then sent to the other workers)",
}


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise UsageError(f"--strategy: got {name!r}, expected one of {', '.join(STRATEGIES)}")
    return name


def uses_cluster(name: str) -> bool:
    """Whether `name` runs on the hosts that TF_CONFIG describes (train.cluster, train.multiworker)."""
    return name == "multiworker" or (name == "auto" and bool(os.environ.get("TF_CONFIG")))


def make_strategy(name: str):
    """A tf.distribute strategy for `name` (see the module docstring)."""
    import tensorflow as tf

    check_strategy(name)
    if uses_cluster(name):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        return tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.get_strategy()
    devices = gpus or [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def describe_strategy(strategy) -> dict:
    """What ran, for train_config.json: the strategy's class and its number of replicas."""
    return {"name": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync)}
