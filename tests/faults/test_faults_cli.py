"""Exit codes on the odd paths, and a quiet `allx`: TensorFlow's start-up lines only with --verbose."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from allx.console import handle_errors

REPO = Path(__file__).resolve().parents[2]


def exit_code_of(error: BaseException) -> int:
    @handle_errors
    def command():
        raise error

    app = typer.Typer()
    app.command()(command)
    return CliRunner().invoke(app, []).exit_code


def chained_interrupt() -> RuntimeError:
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise RuntimeError("converter failed") from interrupt
    except RuntimeError as err:
        return err


def test_ctrl_c_wrapped_by_a_library_is_still_130():
    assert exit_code_of(chained_interrupt()) == 130
    assert exit_code_of(KeyboardInterrupt()) == 130


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EISDIR])
def test_os_errors_are_exit_2(code):
    assert exit_code_of(OSError(code, os.strerror(code), "/some/out")) == 2


def run_allx(*args):
    env = {**os.environ, "ALLX_CACHE_DIR": "/nonexistent-allx-cache"}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    allx = Path(sys.executable).parent / "allx"
    if not allx.is_file():
        pytest.skip(f"the allx command is not installed beside {sys.executable}")
    return subprocess.run([str(allx), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_allx_prints_one_error_line_without_tensorflow_noise(tmp_path):
    quiet = run_allx("train", str(tmp_path / "missing"), "--out", str(tmp_path / "run"))
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [f"error: data directory not found: got {tmp_path / 'missing'}, "
                                                 "expected a folder of class folders"], quiet.stderr
    verbose = run_allx("--verbose", "train", str(tmp_path / "missing"), "--out", str(tmp_path / "run"))
    assert verbose.returncode == 2
    assert len(verbose.stderr.strip().splitlines()) >= 1
