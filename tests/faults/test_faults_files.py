"""allx.files, the one output writer: no planted link followed, streams written in place, links updated, locks."""

import errno
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from allx.edge_runner.output import StreamedCsv
from allx.errors import AllxError
from allx.files import StreamedFile, write_atomic


def test_planted_symlink_at_a_temp_name_is_never_written_through(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    import allx.files

    monkeypatch.setattr(allx.files.secrets, "token_hex", lambda n: "fixed")
    (tmp_path / ".out.txt.fixed.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_atomic(tmp_path / "out.txt", "new")
    assert victim.read_text() == "keep me"


def test_planted_symlink_at_the_log_part_name_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "x.csv.part").symlink_to(victim)
    with pytest.raises(AllxError, match="cannot write"):
        StreamedCsv(tmp_path / "x.csv", ["a"])
    assert victim.read_text() == "keep me"


def test_symlinked_output_updates_its_target(tmp_path):
    target = tmp_path / "real" / "results.csv"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "results.csv"
    link.symlink_to(target)
    write_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_fifo_is_written_in_place_not_replaced(tmp_path):
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo).read()))
    reader.start()
    write_atomic(fifo, "a,b\n")
    reader.join(timeout=10)
    assert received == ["a,b\n"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_dev_full_stays_a_device_and_the_error_is_disk_full():
    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("/dev/full is absent on this machine")
    with pytest.raises(OSError) as caught:
        write_atomic(full, "x" * 10000)
    assert caught.value.errno == errno.ENOSPC
    assert stat.S_ISCHR(os.stat(full).st_mode), "the device must never become a regular file"


def test_a_second_writer_of_the_same_log_is_refused_and_the_first_log_is_kept(tmp_path):
    first = StreamedCsv(tmp_path / "log.csv", ["frame"])
    first.write([1])
    with pytest.raises(AllxError, match="another process is writing this log"):
        StreamedCsv(tmp_path / "log.csv", ["frame"])
    first.write([2])
    first.close()
    assert (tmp_path / "log.csv").read_text().split() == ["frame", "1", "2"]
    again = StreamedCsv(tmp_path / "log.csv", ["frame"])  # the lock is released on close
    again.close()


def test_the_lock_holds_across_processes(tmp_path):
    log = StreamedFile(tmp_path / "log.csv")
    code = ("import sys; from allx.files import StreamedFile, LogInUse\n"
            "try:\n    StreamedFile(sys.argv[1])\nexcept LogInUse:\n    sys.exit(7)\n")
    other = subprocess.run([os.sys.executable, "-c", code, str(tmp_path / "log.csv")], timeout=60)
    log.close()
    assert other.returncode == 7


def test_disk_full_while_logging_is_one_clear_error_and_the_rows_stay(tmp_path, monkeypatch):
    log = StreamedCsv(tmp_path / "log.csv", ["frame"])
    log.write([1])

    def disk_full(text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log.file.file, "write", disk_full)
    with pytest.raises(AllxError, match="No space left on device.*rows so far are in"):
        log.write([2])
    assert (tmp_path / "log.csv.part").read_text().split() == ["frame", "1"]


def test_a_folder_given_as_log_is_a_clear_error(tmp_path):
    with pytest.raises(AllxError, match="cannot write"):
        StreamedCsv(tmp_path, ["frame"])


def test_small_tmpfs_full_keeps_the_old_file(tmp_path):
    """A real full disk: a 64 KiB tmpfs (needs mount rights; skipped where the machine cannot mount)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    try:
        write_atomic(mount / "model.json", "old")
        with pytest.raises(OSError) as caught:
            write_atomic(mount / "model.json", "x" * 200_000)
        assert caught.value.errno == errno.ENOSPC
        assert (mount / "model.json").read_text() == "old"
        assert [p.name for p in mount.iterdir()] == ["model.json"], "no temp file is left behind"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_ctrl_c_inside_interrupts_deferred_waits_for_the_block_to_end(tmp_path):
    import signal

    from allx.files import interrupts_deferred, write_atomic

    written = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            for name in ("a", "b", "c"):
                write_atomic(tmp_path / name, name)
                written.append(name)
                if name == "a":
                    os.kill(os.getpid(), signal.SIGINT)
    assert written == ["a", "b", "c"] and all((tmp_path / n).read_text() == n for n in written)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back


def test_ctrl_c_while_a_cli_loads_is_exit_130_with_one_line(monkeypatch, capsys):
    import importlib

    import allx.entry

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    with pytest.raises(SystemExit) as exited:
        allx.entry.allx_edge()
    assert exited.value.code == 130 and capsys.readouterr().err == "error: interrupted\n"
