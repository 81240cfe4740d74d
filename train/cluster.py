"""The workers of a multi-worker run: TF_CONFIG read and checked, a rendezvous of our own before
TensorFlow's, and the links over which every worker watches the others until the run ends.

Why a rendezvous of our own: MultiWorkerMirroredStrategy's start-up (TensorFlow's coordination service)
waits in C++ for every task of the cluster with no deadline, and Python's signal handlers cannot run
meanwhile, so a chief whose peer never starts hangs and ignores Ctrl-C and SIGTERM. Here every worker
first meets the chief over plain TCP on the chief's own TF_CONFIG port (released again before TensorFlow
binds it), within a deadline (`--worker-timeout`). Waiting is a Python select loop, so SIGINT and SIGTERM
stop it at once.

After the rendezvous the links stay open (a star: every worker to the chief) and each side writes a
heartbeat every HEARTBEAT_S. A process that dies closes its sockets (the kernel does), which the others
see at once; a lost host or network is a link silent for the timeout. Either is a ClusterError.
Messages are JSON lines: {"hello": index, "options": {...}}, {"go": true}, {"done": true},
{"fail": "why"}, and "." for a heartbeat.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Iterator

from allx.errors import ClusterError, Terminated, UsageError

DEFAULT_WORKER_TIMEOUT = 120.0  # seconds: long enough for a host to start Python and TensorFlow
HEARTBEAT_S = 1.0
POLL_S = 0.5  # the longest a wait sleeps before it looks at the clock (and lets a signal handler run)
JOBS = ("chief", "worker")  # TF_CONFIG jobs that train; the chief (or worker 0 without one) is task 0
MAX_LINE = 1 << 20


@dataclass(frozen=True)
class Cluster:
    """Every task's "host:port" (the chief first) and this process's place among them."""

    addresses: tuple[str, ...]
    index: int

    @property
    def size(self) -> int:
        return len(self.addresses)

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    def name(self, index: int) -> str:
        return f"worker {index} ({self.addresses[index]})"

    @property
    def workers_here(self) -> int:
        """How many of the cluster's workers share this worker's host (all of them on 127.0.0.1)."""
        mine = split_address(self.addresses[self.index])[0]
        return sum(split_address(address)[0] == mine for address in self.addresses)

    def threads_per_worker(self, cpus: int | None = None) -> int | None:
        """TensorFlow threads for this worker: this host's CPUs divided among the workers on it; None
        (TensorFlow's default, every CPU) when it is alone on its host."""
        if self.workers_here == 1:
            return None
        cpus = cpus or len(os.sched_getaffinity(0))
        return max(1, cpus // self.workers_here)


def read_cluster(text: str | None) -> Cluster | None:
    """The cluster described by TF_CONFIG's text (None when unset or empty)."""
    if not text:
        return None
    expected = 'expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": N}}'
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        jobs = {job: list(cluster.get(job, [])) for job in JOBS}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UsageError(f"TF_CONFIG: got {text[:200]!r} ({err.__class__.__name__}), {expected}") from None
    others = sorted(set(cluster) - set(JOBS))
    if others or kind not in JOBS or not 0 <= index < len(jobs[kind]):
        raise UsageError(f"TF_CONFIG: got jobs {sorted(cluster)} and task {kind!r} {index}, {expected} "
                         "(a chief job is allowed; parameter servers and evaluators are not)")
    addresses = tuple(jobs["chief"] + jobs["worker"])
    for address in addresses:
        split_address(address)
    return Cluster(addresses, index + (len(jobs["chief"]) if kind == "worker" else 0))


def split_address(address: str) -> tuple[str, int]:
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"TF_CONFIG: got address {address!r}, expected host:port")
    return host.strip("[]"), int(port)


@dataclass
class Peer:
    index: int
    sock: socket.socket
    heard: float = field(default_factory=time.monotonic)
    buffer: bytes = b""
    finished: bool = False  # it said it is done: its link may close now
    closed: bool = False

    def send(self, message) -> None:
        line = b".\n" if message == "." else json.dumps(message).encode() + b"\n"
        try:
            self.sock.sendall(line)
        except OSError:
            pass  # a closed link is reported by the next read

    def read(self) -> list | None:
        """The complete messages that have arrived (None once the other side has closed the link)."""
        try:
            chunk = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not chunk:
            return None
        self.heard = time.monotonic()
        self.buffer += chunk
        if len(self.buffer) > MAX_LINE:
            return None
        *lines, self.buffer = self.buffer.split(b"\n")
        try:
            messages = [json.loads(line) for line in lines if line and line != b"."]
        except ValueError:
            return None  # not one of ours: treated as a broken link
        return messages if all(isinstance(m, dict) for m in messages) else None


class Links:
    """The open links of one worker: to every other worker on the chief, to the chief elsewhere."""

    def __init__(self, cluster: Cluster, peers: list[Peer], timeout: float):
        self.cluster, self.peers, self.timeout = cluster, peers, timeout
        self.beaten = 0.0

    @property
    def chief_done(self) -> bool:
        return any(peer.index == 0 and peer.finished for peer in self.peers)

    def wait(self, others=(), timeout: float = POLL_S) -> list:
        """Those of `others` (connections, sentinels) that are ready within `timeout`, reading the links
        meanwhile: ClusterError when a peer failed, closed its link before it was done or fell silent."""
        self.beat()
        live = {peer.sock: peer for peer in self.peers if not peer.closed}
        ready = wait([*live, *others], timeout)
        for sock in [s for s in ready if s in live]:
            self.take(live[sock], live[sock].read())
        now = time.monotonic()
        for peer in self.peers:
            if not peer.closed and now - peer.heard > self.timeout:
                raise ClusterError(f"{self.cluster.name(peer.index)} sent nothing for {self.timeout:g} s: got "
                                   "silence, expected a heartbeat every second (host or network lost?)")
        return [obj for obj in ready if obj not in live]

    def take(self, peer: Peer, messages: list | None) -> None:
        if messages is None:
            peer.closed = True
            if not peer.finished:
                raise ClusterError(f"{self.cluster.name(peer.index)} stopped during the run: got its link "
                                   "closed, expected it to work until the end")
            return
        for message in messages:
            if "fail" in message:
                raise ClusterError(f"{self.cluster.name(peer.index)} failed: {message['fail']}")
            if message.get("done"):
                peer.finished = True

    def beat(self) -> None:
        if time.monotonic() - self.beaten >= HEARTBEAT_S:
            self.beaten = time.monotonic()
            for peer in self.peers:
                peer.send(".")

    def tell(self, message: dict) -> None:
        for peer in self.peers:
            peer.send(message)

    def close(self) -> None:
        for peer in self.peers:
            with contextlib.suppress(OSError):
                peer.sock.close()


def join_cluster(cluster: Cluster, options: dict, timeout: float) -> Links:
    """Meet every other worker within `timeout` seconds (ClusterError when one does not come, UsageError
    when one runs with other training options); then TensorFlow's own start-up finds them all up."""
    deadline = time.monotonic() + timeout
    peers = gather_workers(cluster, options, deadline, timeout) if cluster.is_chief else \
        [reach_chief(cluster, options, deadline, timeout)]
    for peer in peers:
        peer.heard = time.monotonic()
    return Links(cluster, peers, timeout)


def gather_workers(cluster: Cluster, options: dict, deadline: float, timeout: float) -> list[Peer]:
    """The chief's side: listen on its TF_CONFIG port until every other worker has said hello."""
    port = split_address(cluster.addresses[0])[1]
    try:
        listener = socket.create_server(("", port), backlog=cluster.size)  # SO_REUSEADDR: TF binds it next
    except OSError as err:
        raise ClusterError(f"the chief cannot listen on port {port} ({err.strerror}): got it in use, expected "
                           "the free port TF_CONFIG names for task 0") from None
    pending, joined = [], {}
    try:
        while len(joined) < cluster.size - 1:
            if time.monotonic() > deadline:
                missing = [cluster.name(i) for i in range(1, cluster.size) if i not in joined]
                message = (f"{', '.join(missing)} did not join within {timeout:g} s: got {len(joined) + 1} of "
                           f"{cluster.size} workers, expected all of TF_CONFIG's cluster")
                for peer in joined.values():
                    peer.send({"fail": message})
                raise ClusterError(message)
            ready, _, _ = select.select([listener, *(p.sock for p in pending)], [], [], POLL_S)
            if listener in ready:
                sock, _ = listener.accept()
                sock.setblocking(False)
                pending.append(Peer(-1, sock))
            for peer in [p for p in pending if p.sock in ready]:
                messages = peer.read()
                if messages is None or messages:
                    pending.remove(peer)
                if messages:
                    joined[check_hello(cluster, options, messages[0], joined, peer)] = peer
    except BaseException:
        for peer in [*pending, *joined.values()]:
            peer.sock.close()
        raise
    finally:
        listener.close()
    for peer in joined.values():
        peer.send({"go": True})
    return list(joined.values())


def check_hello(cluster: Cluster, options: dict, hello: dict, joined: dict, peer: Peer) -> int:
    index = hello.get("hello")
    if not isinstance(index, int) or not 0 < index < cluster.size or index in joined:
        peer.send({"fail": f"got task index {index}, expected a free one of 1..{cluster.size - 1}"})
        raise ClusterError(f"a worker said it is task {index}: got a duplicate or unknown index, expected "
                           f"each of 1..{cluster.size - 1} once")
    theirs = hello.get("options") if isinstance(hello.get("options"), dict) else {}
    differ = sorted(k for k in options.keys() | theirs.keys() if options.get(k) != theirs.get(k))
    if differ:
        key = differ[0]
        message = (f"{cluster.name(index)} runs with other options: --{key.replace('_', '-')} got "
                   f"{theirs.get(key)!r}, expected the chief's {options.get(key)!r} (the same command "
                   "on every host)")
        peer.send({"fail": message})
        raise UsageError(message)
    peer.index = index
    return index


def reach_chief(cluster: Cluster, options: dict, deadline: float, timeout: float) -> Peer:
    """A worker's side: connect to the chief (retrying until it listens), say hello, wait for go."""
    host, port = split_address(cluster.addresses[0])
    sock = None
    while sock is None:
        try:
            sock = socket.create_connection((host, port), timeout=POLL_S)
        except OSError:
            if time.monotonic() > deadline:
                raise ClusterError(f"the chief {cluster.name(0)} did not answer within {timeout:g} s: got no "
                                   "rendezvous, expected task 0 of TF_CONFIG running") from None
            time.sleep(POLL_S / 2)
    sock.setblocking(False)
    chief = Peer(0, sock)
    chief.send({"hello": cluster.index, "options": options})
    while True:
        if time.monotonic() > deadline:
            sock.close()
            raise ClusterError(f"the chief {cluster.name(0)} did not start the run within {timeout:g} s: got no "
                               "go, expected every worker of TF_CONFIG's cluster to join")
        ready, _, _ = select.select([sock], [], [], POLL_S)
        messages = chief.read() if ready else []
        if messages is None:
            raise ClusterError(f"the chief {cluster.name(0)} closed the link during the rendezvous")
        for message in messages:
            if "fail" in message:
                sock.close()
                raise ClusterError(f"the chief {cluster.name(0)} stopped the run: {message['fail']}")
            if message.get("go"):
                return chief


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated (exit 143) while the block runs, so a
    waiting worker stops at once and its cleanup (`finally`) runs."""

    def terminate(signum, frame):
        raise Terminated("terminated")

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
