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
from allx.files import write_atomic


def test_planted_symlink_at_a_temp_name_is_never_written_through(tmp_path, monkeypatch):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    import allx.files

    monkeypatch.setattr(allx.files.secrets, "token_hex", lambda n: "fixed")
    (tmp_path / ".out.txt.fixed.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_atomic(tmp_path / "out.txt", "new")
    assert victim.read_text() == "keep me"


def test_a_planted_symlink_beside_the_log_is_never_written(tmp_path):
    """The log is appended in place (no temporary name a link could be planted at)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "x.csv.part").symlink_to(victim)
    log = StreamedCsv(tmp_path / "x.csv", ["a"])
    log.write([1])
    log.close()
    assert victim.read_text() == "keep me" and (tmp_path / "x.csv").read_text().split() == ["a", "1"]


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


def test_two_writers_of_one_log_keep_every_row_and_one_header(tmp_path):
    first = StreamedCsv(tmp_path / "log.csv", ["frame"])
    first.write([1])
    second = StreamedCsv(tmp_path / "log.csv", ["frame"])
    second.write([10])
    first.write([2])
    second.close()
    first.close()
    again = StreamedCsv(tmp_path / "log.csv", ["frame"])  # a later session appends, it replaces nothing
    again.write([3])
    again.close()
    assert (tmp_path / "log.csv").read_text().split() == ["frame", "1", "10", "2", "3"]


def test_a_log_with_other_columns_is_refused_and_kept(tmp_path):
    (tmp_path / "log.csv").write_text("time,label\n1,Pre\n")
    with pytest.raises(AllxError, match="not this log's header.*give a new --log path"):
        StreamedCsv(tmp_path / "log.csv", ["frame"])
    assert (tmp_path / "log.csv").read_text() == "time,label\n1,Pre\n"


def test_two_processes_appending_at_once_lose_and_tear_no_row(tmp_path):
    """Two real processes write 300 rows each, as fast as they can, into one log."""
    code = ("import sys; from allx.edge_runner.output import StreamedCsv\n"
            "log = StreamedCsv(sys.argv[1], ['writer', 'row', 'padding'])\n"
            "[log.write([sys.argv[2], i, 'x' * 3000]) for i in range(300)]\nlog.close()\n")
    writers = [subprocess.Popen([os.sys.executable, "-c", code, str(tmp_path / "log.csv"), name])
               for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    import csv

    rows = list(csv.reader(open(tmp_path / "log.csv", newline="")))
    assert rows[0] == ["writer", "row", "padding"] and len(rows) == 601
    for name in ("a", "b"):
        assert [int(r[1]) for r in rows[1:] if r[0] == name] == list(range(300))
    assert all(r[2] == "x" * 3000 for r in rows[1:])


def test_disk_full_while_logging_is_one_clear_error_and_the_rows_stay(tmp_path, monkeypatch):
    import allx.files

    log = StreamedCsv(tmp_path / "log.csv", ["frame"])
    log.write([1])

    def disk_full(fd, payload):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(allx.files, "write_all", disk_full)
    with pytest.raises(AllxError, match="No space left on device.*rows so far are in"):
        log.write([2])
    assert (tmp_path / "log.csv").read_text().split() == ["frame", "1"]


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


def test_a_ctrl_c_inside_interrupts_deferred_waits_for_the_block_to_end(tmp_path, default_sigint):
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


def test_the_ctrl_c_test_passes_when_pytest_starts_with_sigint_ignored():
    """A pytest started in the background (`pytest &`) begins with SIGINT ignored; the test that sends itself
    SIGINT must still see its KeyboardInterrupt."""
    import signal
    import subprocess
    import sys

    test = f"{__file__}::test_a_ctrl_c_inside_interrupts_deferred_waits_for_the_block_to_end"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
                         capture_output=True, text=True, timeout=120,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert run.returncode == 0, run.stdout[-2000:]
