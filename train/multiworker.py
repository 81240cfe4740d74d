"""`allx train` on the hosts of a TF_CONFIG cluster: features sharded, the head fitted once, the chief
alone writing --out, and no worker left hanging when another one is missing.

Each host runs the same command. This process (the parent) never imports TensorFlow: it meets the others
(train.cluster's rendezvous, within --worker-timeout), then runs the training in a child process and
watches the child, the links to the other workers and the signals together. TensorFlow's collective
start-up and its collectives block in C++, where Python's signal handlers cannot run and no deadline
applies; a child can always be killed, so a lost peer, Ctrl-C (130) or SIGTERM (143) stop this worker at
once, whatever TensorFlow is doing. The chief trains into the usual hidden staging folder and publishes
it as --out only when the run is complete; the other workers train in a temporary folder (their feature
cache too) and remove it, so they write nothing else. A worker killed with SIGKILL cannot remove its
folder; the folder's name carries the worker's pid, and the next worker started on that host removes
the folders whose process is gone.

The phases (train_config.json's distribution.phases, words in train.distribute.PHASES):
    embeddings   only for a split that joins embedding neighbours (--group-by sequence, --neighbours):
                 sharded like the features into the chief's embedding cache, unless it has them already
    split        made once, on the chief (the near-duplicate hashing and the neighbour search, a matrix
                 product over the gathered embeddings, included), then sent to the other workers,
                 which check it against their own data folder
    features     sharded (train.sharding): each worker extracts its share, the strategy all-gathers them
    head         fitted once, on the chief, exactly as in one process (logreg: scikit-learn; flatten/gap,
                 the ResNet50 recipe: Keras fit on the cached features); the others are done by then.
                 Data-parallel Keras fit is not used: Keras 3 does not train under
                 MultiWorkerMirroredStrategy (keras-team/keras#20585), and a head on cached features
                 trains in seconds, where the extraction takes minutes
    evaluation   the chief alone, as a one-process run does it
Fine-tuning (--fine-tune-layers) is not offered across hosts: it is refused before any work starts.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import traceback
from pathlib import Path

from allx import layout
from allx.errors import AllxError, ClusterError, UsageError
from allx.train.cluster import Cluster, Links, join_cluster, stop_signals
from allx.train.features import default_cache_dir
from allx.train.publish import check_out_dir, discard_staging, make_staging_dir, publish_run
from allx.train.trainer import TrainingInterrupted, TrainResult

# Training options a worker must share with the chief; paths may differ from host to host (the split's
# contents are compared once made), and --out and the timeout are each host's own.
HOST_OWN = ("data_dir", "out_dir", "split_path", "cache_dir", "groups_file", "worker_timeout")
KILL_WAIT_S = 5.0
WORKER_DIR = "allx-worker-"  # a worker's temporary folder in the system's: allx-worker-<pid>-<random>


def train_multiworker(config, cluster: Cluster, progress=None) -> TrainResult:
    """Train as worker `cluster.index` of the cluster; the chief returns the published run, the others a
    TrainResult without a model (model_path None)."""
    if config.fine_tune_layers:
        raise UsageError(f"--fine-tune-layers {config.fine_tune_layers} with {cluster.size} workers: got fine-tuning, "
                         "expected 0 (fine-tuning is not sharded across hosts; run it in one process)")
    out_dir = Path(config.out_dir)
    if cluster.is_chief:
        check_out_dir(out_dir)
    with stop_signals():
        links = join_cluster(cluster, shared_options(config), config.worker_timeout)
        try:
            run_dir = make_staging_dir(out_dir) if cluster.is_chief else make_worker_dir()
            try:
                result = run_child(config, cluster, run_dir, links, progress)
            except KeyboardInterrupt:
                discard_staging(run_dir)
                raise TrainingInterrupted(f"interrupted; {out_dir} was left as it was") from None
            except BaseException as err:
                discard_staging(run_dir)
                links.tell({"fail": str(err) or err.__class__.__name__})
                raise
            if cluster.is_chief:
                held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # never between two renames
                try:
                    publish_run(run_dir, out_dir)
                finally:
                    signal.pthread_sigmask(signal.SIG_SETMASK, held)
            else:
                discard_staging(run_dir)
            links.tell({"done": True})
        finally:
            links.close()
    if not cluster.is_chief:
        return TrainResult(out_dir, None, {}, {})
    return TrainResult(out_dir, out_dir / layout.MODEL_KERAS, *result)


def make_worker_dir() -> Path:
    """A temporary folder for this worker's run, named by its pid; stale ones of dead workers removed first."""
    remove_stale_worker_dirs(Path(tempfile.gettempdir()))
    return Path(tempfile.mkdtemp(prefix=f"{WORKER_DIR}{os.getpid()}-"))


def remove_stale_worker_dirs(folder: Path) -> list[Path]:
    """Remove this user's worker folders in `folder` whose process has ended (a SIGKILL leaves them);
    a live worker's folder, another user's and a name without a pid are left alone. Returns the removed."""
    removed = []
    for path in sorted(folder.glob(f"{WORKER_DIR}*-*")):
        pid = path.name.removeprefix(WORKER_DIR).split("-", 1)[0]
        if not pid.isdigit() or path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
            continue
        if not process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def shared_options(config) -> dict:
    return {key: value for key, value in vars(config).items() if key not in HOST_OWN}


def run_child(config, cluster: Cluster, run_dir: Path, links: Links, progress):
    """Train in a child process, watching it, the links and the signals; (metrics, history, skipped) on
    the chief, None elsewhere. The child is killed however this ends."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: TensorFlow is never forked
    here, there = context.Pipe()
    child = context.Process(target=child_main, args=(config, cluster, run_dir, there, os.getpid()),
                            name=f"allx-worker-{cluster.index}", daemon=True)
    child.start()
    there.close()
    try:
        return watch_child(child, here, cluster, links, progress)
    finally:
        if child.is_alive():
            child.kill()
        child.join(KILL_WAIT_S)
        cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        for folder in (cache_dir, default_cache_dir().parent / "embeddings"):  # a killed child's unfinished entries
            for partial in folder.glob(f"*.{child.pid}.*partial.npy"):
                partial.unlink(missing_ok=True)


def watch_child(child, connection, cluster: Cluster, links: Links, progress):
    """Relay the child's progress until its result; once it has one, a worker waits for the chief's
    end (its child keeps TensorFlow's peers company meanwhile)."""
    result = None
    while result is None or not (cluster.is_chief or links.chief_done):
        ready = links.wait([connection, child.sentinel])
        if connection in ready:
            try:
                kind, *payload = connection.recv()
            except EOFError:
                kind, payload = "ended", []
            if kind == "progress" and progress:
                progress(*payload)
            elif kind == "done":
                result = payload[0] or ()
                if not cluster.is_chief:
                    links.tell({"done": True})  # its part is done: the chief may see its link close
            elif kind == "error":
                error = AllxError(payload[1])
                error.exit_code = payload[0]
                raise error
            elif kind == "crash":
                raise RuntimeError(f"worker {cluster.index}'s training process failed:\n{payload[0]}")
            elif kind == "ended" and result is None:
                raise ClusterError(f"{cluster.name(cluster.index)}: its training process ended without a result "
                                   f"(exit code {child.exitcode}), expected one")
        elif child.sentinel in ready and result is None and not connection.poll():
            raise ClusterError(f"{cluster.name(cluster.index)}: its training process ended without a result "
                               f"(exit code {child.exitcode}), expected one")
    return result or None


def child_main(config, cluster: Cluster, run_dir: Path, connection, parent: int) -> None:
    """The training process: the parent decides what Ctrl-C stops, and this process ends when the parent
    does (or kills it); after its result it waits to be killed, so that TensorFlow's shutdown (a barrier
    of all the workers) never runs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not cluster.is_chief:  # every cache of this worker (the split's embeddings too) lives in its temporary folder
        os.environ["ALLX_CACHE_DIR"] = str(run_dir / "cache")
    threading.Thread(target=end_with_parent, args=(parent,), daemon=True).start()
    try:
        from allx.train.worker import train_worker_into  # (TensorFlow: imported only in the child)

        result = train_worker_into(config, cluster, run_dir,
                                   lambda stage, done, total: connection.send(("progress", stage, done, total)))
        connection.send(("done", result))
    except AllxError as err:
        connection.send(("error", err.exit_code, str(err)))
    except BaseException:
        connection.send(("crash", traceback.format_exc()))
    try:
        connection.recv()  # EOF when the parent closes or ends
    finally:
        os._exit(0)


def end_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        threading.Event().wait(1.0)
    os._exit(1)
