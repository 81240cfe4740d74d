"""train.distribute: augmented extraction and fine-tuning under MirroredStrategy on two logical CPUs.

TensorFlow fixes its logical devices when it starts, so the run happens in a fresh Python process.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from allx.errors import UsageError
from allx.train.distribute import check_strategy

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from allx.train.trainer import TrainConfig, train_model

    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    config = TrainConfig(data_dir=data, out_dir=out, cache_dir=out / "cache", backbone="efficientnet-lite0",
                         image_size=32, epochs=1, batch_size=8, head="gap", learning_rate=1e-3,
                         augment="dihedral,stain", augment_copies=1, fine_tune_layers=2, fine_tune_epochs=1,
                         strategy="mirrored")
    result = train_model(config)
    print(len(result.history["fine_tune"]["loss"]))
""")


@pytest.mark.slow
def test_mirrored_strategy_runs_the_image_phases_on_two_devices(tmp_path):
    from allx.synthetic import make_dataset

    data = make_dataset(tmp_path / "data", per_class=16, size=32)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "1", "one fine-tuning epoch ran"
    settings = json.loads((out / "train_config.json").read_text())
    assert settings["distribution"] == {"name": "MirroredStrategy", "replicas": 2}
    markers = [json.loads(p.read_text()) for p in (out / "cache").glob("*.json")]
    assert sorted(m["views_per_image"] for m in markers) == [1, 1, 9], "train: 8 clean + 1 jittered view"


def test_unknown_strategy_is_refused():
    with pytest.raises(UsageError, match="expected one of auto, mirrored, multiworker"):
        check_strategy("horovod")


def test_auto_on_one_device_without_tf_config_changes_nothing(monkeypatch):
    import tensorflow as tf

    from allx.train.distribute import describe_strategy, make_strategy

    monkeypatch.delenv("TF_CONFIG", raising=False)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        pytest.skip("this machine has several GPUs: auto mirrors over them")
    assert describe_strategy(make_strategy("auto"))["replicas"] == 1


# --- several hosts: train.cluster (rendezvous, links, signals) and train.multiworker (two real workers) ---

import os
import signal
import socket
import threading
import time

from allx.errors import ClusterError
from allx.train.cluster import Cluster, join_cluster, read_cluster

TRAIN = ["train", "--backbone", "efficientnet-lite0", "--image-size", "32"]
CLI = "from allx.entry import allx; allx()"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports, index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def worker_env(tmp_path, ports, index: int) -> dict:
    folder = tmp_path / f"worker{index}"
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TF_CONFIG": tf_config(ports, index), "ALLX_CACHE_DIR": str(folder / "cache"),
            "TMPDIR": str(folder / "tmp"), "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_tf_config_is_read_with_the_chief_first_and_refused_when_malformed():
    text = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 1}})
    assert read_cluster(text) == Cluster(("a:1", "b:2", "c:3"), 2)
    assert read_cluster("") is None
    for bad in ("{", json.dumps({"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}),
                json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}),
                json.dumps({"cluster": {"worker": ["no-port"]}, "task": {"type": "worker", "index": 0}})):
        with pytest.raises(UsageError, match="TF_CONFIG: got"):
            read_cluster(bad)


def join_in_thread(cluster, options, timeout):
    outcome = {}

    def run():
        try:
            outcome["links"] = join_cluster(cluster, options, timeout)
        except Exception as err:  # handed to the test thread
            outcome["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_workers_meet_then_a_closed_or_silent_link_stops_the_other():
    addresses = tuple(f"127.0.0.1:{p}" for p in free_ports(2))
    thread, chief = join_in_thread(Cluster(addresses, 0), {"seed": 1}, 20)
    worker = join_cluster(Cluster(addresses, 1), {"seed": 1}, 20)
    thread.join()
    worker.wait(timeout=0.1)
    chief["links"].wait(timeout=0.1)  # heartbeats only: nothing to report
    worker.close()  # a worker process dying closes its sockets
    with pytest.raises(ClusterError, match="worker 1 .* stopped during the run"):
        for _ in range(20):
            chief["links"].wait(timeout=0.1)
    chief["links"].close()

    thread, chief = join_in_thread(Cluster(addresses, 0), {}, 20)
    silent = join_cluster(Cluster(addresses, 1), {}, 20)
    thread.join()
    chief["links"].timeout = 0.3
    silent.beat = lambda: None  # a host that stopped answering without closing anything
    with pytest.raises(ClusterError, match="sent nothing for 0.3 s"):
        for _ in range(20):
            silent.wait(timeout=0.05)
            chief["links"].wait(timeout=0.1)
    chief["links"].close(), silent.close()


def test_a_worker_with_other_options_is_refused_by_name():
    addresses = tuple(f"127.0.0.1:{p}" for p in free_ports(2))
    thread, chief = join_in_thread(Cluster(addresses, 0), {"seed": 1}, 20)
    with pytest.raises(ClusterError, match="--seed got 2, expected the chief's 1"):
        join_cluster(Cluster(addresses, 1), {"seed": 2}, 20)
    thread.join()
    assert "--seed got 2, expected the chief's 1" in str(chief["error"])


def test_a_lone_chief_stops_with_one_line_and_exit_2(tmp_path, synthetic_dir):
    ports = free_ports(2)
    done = subprocess.run([sys.executable, "-c", CLI, *TRAIN, str(synthetic_dir), "--out", str(tmp_path / "run"),
                           "--worker-timeout", "2"], env=worker_env(tmp_path, ports, 0), capture_output=True,
                          text=True, timeout=300)  # (a hang fails here instead of blocking the suite)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: worker 1 (127.0.0.1:{ports[1]}) did not join within 2 s: got 1 of 2 workers, expected all of "
        "TF_CONFIG's cluster"]
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


@pytest.mark.parametrize("sent, code, line", [(signal.SIGTERM, 143, "error: terminated"),
                                              (signal.SIGINT, 130, "error: interrupted")])
def test_a_signal_stops_a_waiting_worker_at_once(tmp_path, synthetic_dir, sent, code, line):
    ports = free_ports(2)
    waiting = subprocess.Popen([sys.executable, "-c", CLI, *TRAIN, str(synthetic_dir), "--out", str(tmp_path / "run")],
                               env=worker_env(tmp_path, ports, 0), stderr=subprocess.PIPE, text=True)
    for _ in range(600):  # until the chief listens for its peers
        try:
            socket.create_connection(("127.0.0.1", ports[0]), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    waiting.send_signal(sent)
    _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == code and stderr.strip().splitlines() == [line]
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


@pytest.mark.slow
def test_a_peer_lost_mid_run_stops_the_chief(tmp_path, synthetic_dir, monkeypatch):
    """Worker 1 joins, then its link closes while the chief's training process starts TensorFlow (which
    would wait for worker 1 in C++ for ever): the chief kills its child and stops with ClusterError."""
    from allx.train.multiworker import shared_options, train_multiworker
    from allx.train.trainer import TrainConfig, with_backbone_recipe

    ports = free_ports(2)
    monkeypatch.setenv("TF_CONFIG", tf_config(ports, 0))
    config = with_backbone_recipe(TrainConfig(data_dir=synthetic_dir, out_dir=tmp_path / "run", image_size=32,
                                              backbone="efficientnet-lite0", cache_dir=tmp_path / "cache",
                                              strategy="multiworker", worker_timeout=30))
    cluster = read_cluster(os.environ["TF_CONFIG"])

    def peer_that_dies():
        links = join_cluster(Cluster(cluster.addresses, 1), shared_options(config), 30)
        for _ in range(10):  # a few heartbeats, then gone
            links.wait(timeout=0.3)
        links.close()

    thread = threading.Thread(target=peer_that_dies)
    thread.start()
    with pytest.raises(ClusterError, match="worker 1 .* stopped during the run"):
        train_multiworker(config, cluster)
    thread.join()
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))


# The default recipe (Lite0 multiscale features, logreg head; split by blocks of file numbers with embedding
# neighbours joined, so the embeddings are sharded too) and the reference one (ResNet50 with random weights at
# 32 px, the smallest input it accepts; dihedral views; a Flatten head fitted by Keras for 1 epoch).
RECIPES = {"efficientnet-lite0": ([*TRAIN[1:], "--group-by", "sequence", "--block-size", "2"], {}),
           "resnet50": (["--backbone", "resnet50", "--image-size", "32", "--weights", "none", "--epochs", "1",
                         "--head", "flatten", "--features", "last", "--augment", "dihedral"],
                        {"weights": "none", "epochs": 1, "head": "flatten", "features": "last", "augment": "dihedral"})}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_two_workers_shard_the_features_and_match_one_process(tmp_path, monkeypatch, recipe):
    """Two `allx train` processes on 127.0.0.1: both exit 0, the chief alone writes --out, worker 1 leaves
    nothing behind, and the model equals a one-process run on the same split (same test predictions: the
    same confusion matrix, the test loss within 1e-3; a Keras head the same history within 1e-3)."""
    from allx.synthetic import make_dataset
    from allx.train.cluster import Cluster
    from allx.train.trainer import TrainConfig, train_model

    args, options = RECIPES[recipe]
    data = make_dataset(tmp_path / "data", per_class=12, size=32, seed=3)
    ports = free_ports(2)
    workers = [subprocess.Popen([sys.executable, "-c", CLI, "train", *args, str(data), "--out", str(tmp_path / f"run{i}"),
                                 "--worker-timeout", "60"], env=worker_env(tmp_path, ports, i),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]
    chief = tmp_path / "run0"
    assert (chief / "model.keras").is_file()
    assert not (tmp_path / "run1").exists(), "worker 1 writes no run folder"
    assert not list((tmp_path / "worker1" / "tmp").glob("allx-worker-*")), "worker 1 removed its temporary folder"
    assert not (tmp_path / "worker1" / "cache").exists(), "worker 1 cached nothing outside its temporary folder"
    settings = json.loads((chief / "train_config.json").read_text())["distribution"]
    assert settings["name"] == "CollectiveAllReduceStrategy" and settings["workers"] == 2
    assert settings["threads_per_worker"] == Cluster(("127.0.0.1:1", "127.0.0.1:2"), 0).threads_per_worker()
    embeddings = {"embeddings": "sharded"} if recipe == "efficientnet-lite0" else {}
    assert settings["phases"] == {"split": "chief", **embeddings, "head": "chief", "evaluation": "chief",
                                  "features": {"train": "sharded", "val": "sharded", "test": "sharded"}}
    split = json.loads((chief / "split.json").read_text())
    assert sum(settings["images_per_worker"]["train"]) == len(split["train"])
    assert min(settings["images_per_worker"]["train"]) >= len(split["train"]) // 2

    monkeypatch.delenv("TF_CONFIG", raising=False)
    if embeddings:  # the split from gathered embeddings is the one a single process makes
        from allx.train.embeddings import SIMILARITY
        from allx.train.split import make_split

        monkeypatch.setenv("ALLX_CACHE_DIR", str(tmp_path / "one-env-cache"))
        alone = make_split(data, group_by="sequence", block_size=2, similarity=SIMILARITY).to_json()
        assert [alone[s] for s in ("train", "val", "test")] == [split[s] for s in ("train", "val", "test")]
        assert split["meta"]["grouping"]["neighbours"] == alone["meta"]["grouping"]["neighbours"]
        gathered, one = (sorted((folder / "embeddings").glob("*.npy")) for folder in
                         (tmp_path / "worker0" / "cache", tmp_path / "one-env-cache"))
        assert [p.name for p in gathered] == [p.name for p in one] and len(one) == 1
        np.testing.assert_allclose(np.load(gathered[0]).astype(np.float32), np.load(one[0]).astype(np.float32),
                                   atol=2e-2)
    single = train_model(TrainConfig(data_dir=data, out_dir=tmp_path / "one", split_path=chief / "split.json",
                                     backbone=recipe, image_size=32, cache_dir=tmp_path / "one-cache", **options))
    two = json.loads((chief / "metrics.json").read_text())
    assert two["confusion_matrix"] == single.metrics["confusion_matrix"]
    assert abs(two["loss"] - single.metrics["loss"]) < 1e-3
    if recipe == "resnet50":  # a Keras head: every epoch's losses as well
        history = json.loads((chief / "history.json").read_text())
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(history[key], single.history[key], atol=1e-3)
    gathered = sorted((tmp_path / "worker0" / "cache" / "features").glob("*.npy"))
    alone = sorted((tmp_path / "one-cache").glob("*.npy"))
    assert [p.name for p in gathered] == [p.name for p in alone], "the same cache entries (same keys)"
    for mine, theirs in zip(gathered, alone):
        np.testing.assert_allclose(np.load(mine).astype(np.float32), np.load(theirs).astype(np.float32), atol=2e-2)


def test_shares_of_augmented_views_are_the_one_process_views(tmp_path):
    """Sharding changes no view: each image's jitters are seeded by its place in the subset, so the two
    shares, put back in order, hold the rows one process extracts (an unreadable image flagged, not fatal)."""
    from allx.synthetic import make_dataset
    from allx.train.augment import parse_augmentation
    from allx.train.backbones import get_backbone
    from allx.train.sharding import READABLE, UNREADABLE, extract_share, shares_of
    from allx.train.trainer import build_extractor
    from allx.train.view_features import extract_view_features

    data = make_dataset(tmp_path / "data", per_class=2, size=32)
    (data / "Benign" / "broken.jpg").write_bytes(b"not a jpeg")
    relpaths = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    labels = [0] * len(relpaths)
    backbone = get_backbone("efficientnet-lite0")
    _, _, _, extractor = build_extractor(backbone, backbone.default_weights, (32, 32), "multiscale")
    augmentation = parse_augmentation("dihedral,stain", 1)
    views = augmentation.views_per_image
    alone = extract_view_features(extractor, data, relpaths, labels, (32, 32), augmentation, tmp_path / "one.npy", 5)

    rows = {}
    for worker, indices in enumerate(shares_of(len(relpaths), 2)):
        share = extract_share(extractor, data, relpaths, indices, (32, 32), augmentation, 5, tmp_path / f"{worker}.npy")
        for j, index in enumerate(share.indices):
            expected = UNREADABLE if relpaths[index].endswith("broken.jpg") else READABLE
            assert share.readable[j] == expected
            if expected == READABLE:
                rows[int(index)] = np.asarray(share.rows[j * views:(j + 1) * views], np.float32)
    together = np.concatenate([rows[i] for i in sorted(rows)])
    assert len(together) == len(alone.features) == (len(relpaths) - 1) * views
    np.testing.assert_allclose(together, np.asarray(alone.features, np.float32), atol=2e-2)


def test_impossible_multiworker_options_are_refused_before_any_work(tmp_path):
    from allx.train.multiworker import train_multiworker
    from allx.train.trainer import TrainConfig, validate_config

    with pytest.raises(UsageError, match="--worker-timeout: got 0, expected > 0 seconds"):
        validate_config(TrainConfig(data_dir=tmp_path, out_dir=tmp_path / "run", worker_timeout=0))
    cluster = Cluster(tuple(f"127.0.0.1:{p}" for p in free_ports(2)), 0)
    with pytest.raises(UsageError, match="--fine-tune-layers 2 with 2 workers: got fine-tuning, expected 0"):
        train_multiworker(TrainConfig(data_dir=tmp_path, out_dir=tmp_path / "run", fine_tune_layers=2), cluster)
    assert not (tmp_path / "run").exists()


def test_cross_validation_is_refused_on_a_cluster(tmp_path, synthetic_dir, monkeypatch):
    from typer.testing import CliRunner

    from allx.cli.main import app

    monkeypatch.setenv("TF_CONFIG", tf_config(free_ports(2), 0))
    done = CliRunner().invoke(app, ["train", str(synthetic_dir), "--out", str(tmp_path / "run"), "--cv", "3"])
    assert done.exit_code == 2 and "--cv with TF_CONFIG's 2 workers" in done.output
    assert not (tmp_path / "run").exists()
