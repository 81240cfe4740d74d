"""train.multiworker's housekeeping: temporary folders of workers killed with SIGKILL are removed at the next
start, never a live worker's (the two-worker runs themselves are in test_distribute.py)."""

import os
import subprocess
import sys
import tempfile

from allx.train.multiworker import WORKER_DIR, make_worker_dir, remove_stale_worker_dirs


def ended_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_folders_of_ended_workers_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / f"{WORKER_DIR}{ended_pid()}-abc"
    live = tmp_path / f"{WORKER_DIR}{os.getpid()}-def"
    parent = tmp_path / f"{WORKER_DIR}{os.getppid()}-ghi"
    unnamed = tmp_path / f"{WORKER_DIR}x1y2z3"  # the older name without a pid: whose it is cannot be told
    for folder in (dead, live, parent, unnamed):
        (folder / "cache").mkdir(parents=True)
        (folder / "cache" / "features.npy").write_bytes(b"x")
    not_ours = tmp_path / "other-folder-1-abc"
    not_ours.mkdir()

    assert remove_stale_worker_dirs(tmp_path) == [dead]
    assert not dead.exists()
    assert all(folder.is_dir() for folder in (live, parent, unnamed, not_ours))


def test_a_new_worker_folder_carries_the_pid_and_clears_stale_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / f"{WORKER_DIR}{ended_pid()}-abc"
    stale.mkdir()
    made = make_worker_dir()
    assert made.parent == tmp_path and made.name.startswith(f"{WORKER_DIR}{os.getpid()}-") and made.is_dir()
    assert not stale.exists()
    assert make_worker_dir() != made and made.is_dir(), "a second worker of this process keeps the first's folder"
