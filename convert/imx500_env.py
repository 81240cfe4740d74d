"""The IMX500 tool environment: its own virtualenv in the allx cache, made with the system Python 3.11.

Sony's converter needs what allx's own environment cannot hold: Keras 2.15 under TensorFlow 2.15 (MCT
refuses Keras under newer TensorFlow; a Keras 3 `.keras` file does not load there) and numpy 1.26.
`allx tools install imx500` creates it ahead of time; `allx convert --imx500` creates it on first use.
Sony's software is installed from PyPI onto the user's machine, never bundled with allx.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from allx.errors import MissingDependency

NAME = "imx500"
# MCT 2.6 needs mct-quantizers ~1.7 while this converter pins ~1.6; MCT 2.5.1 resolves to TensorFlow 2.15.1,
# Keras 2.15.0, numpy 1.26.4.
REQUIREMENTS = ("imx500-converter[tf]==3.19.2", "model-compression-toolkit==2.5.1")
PYTHONS = ("python3.11", "python3.10")  # the versions the converter supports
JAVA_MAJOR = 17
SIZE = "about 2.3 GB on disk (measured with du), downloaded from PyPI"
LICENCES = ("imx500-converter, sdspconv, uni-tensorflow: proprietary Sony Semiconductor Solutions software, "
            "installed from PyPI under Sony's terms, never bundled with allx; model-compression-toolkit (MCT) and "
            "TensorFlow 2.15: Apache-2.0")
JAVA_HINT = "sudo apt install openjdk-17-jre-headless"
MARKER = "allx-tool.json"  # written last: a folder without it is an interrupted install


@dataclass(frozen=True)
class ToolEnv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def converter(self) -> Path:
        return self.path / "bin" / "imxconv-tf"


def tools_dir() -> Path:
    """The allx cache's tools folder (ALLX_CACHE_DIR, else ~/.cache/allx, as for the feature cache)."""
    return Path(os.environ.get("ALLX_CACHE_DIR", Path.home() / ".cache" / "allx")) / "tools"


def env_path() -> Path:
    return tools_dir() / NAME


def describe() -> str:
    """What `allx tools install imx500` installs, where, its size and licences (said before it starts)."""
    return (f"IMX500 tool environment in {env_path()}: {', '.join(REQUIREMENTS)} (with TensorFlow 2.15, Keras 2.15, "
            f"numpy 1.26) in a virtualenv of the system Python 3.11; {SIZE}; needs Java {JAVA_MAJOR}. "
            f"Licences: {LICENCES}.")


def installed() -> ToolEnv | None:
    """The environment when a finished install of these very requirements is there, else None."""
    marker = env_path() / MARKER
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    env = ToolEnv(env_path())
    ok = recorded.get("requirements") == list(REQUIREMENTS) and env.python.is_file() and env.converter.is_file()
    return env if ok else None


def ensure(log_path: Path, on_step: Callable[[str], None] | None = None) -> ToolEnv:
    """The installed environment, installing it first when it is missing, unfinished or out of date."""
    return installed() or install(log_path, on_step)


def install(log_path: Path, on_step: Callable[[str], None] | None = None) -> ToolEnv:
    """Create the virtualenv and pip-install the requirements into it; pip's output goes to `log_path`.

    A venv's scripts name its folder, so it is built in place; the marker, written last, says it is whole.
    """
    java_version()
    python = system_python()
    path = env_path()
    if path.exists():
        shutil.rmtree(path)  # an interrupted or outdated install: start clean
    path.parent.mkdir(parents=True, exist_ok=True)
    step = on_step or (lambda text: None)
    with open(log_path, "a") as log:
        step(f"creating a virtualenv with {python}")
        run_logged([python, "-m", "venv", str(path)], log, "creating the virtualenv")
        step(f"pip install {' '.join(REQUIREMENTS)} ({SIZE})")
        run_logged([str(path / "bin" / "python"), "-m", "pip", "install", "--progress-bar", "off", *REQUIREMENTS],
                   log, "pip install")
    env = ToolEnv(path)
    if not env.converter.is_file():
        raise MissingDependency(f"got no imxconv-tf in {path / 'bin'} after pip install, expected the converter "
                                f"(see {log_path})")
    (path / MARKER).write_text(json.dumps({"requirements": list(REQUIREMENTS), "python": python}))
    return env


def run_logged(command: list[str], log, what: str) -> None:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise MissingDependency(f"{what} failed (exit {done.returncode}), expected it to succeed; see {log.name}")


def system_python() -> str:
    """A Python the converter supports (3.10 or 3.11): this one when it is, else one on PATH."""
    if sys.version_info[:2] in ((3, 10), (3, 11)):
        return sys.executable
    for name in PYTHONS:
        found = shutil.which(name)
        if found:
            return found
    raise MissingDependency(f"got no {' or '.join(PYTHONS)} on PATH, expected one for the IMX500 converter "
                            "(sudo apt install python3.11 python3.11-venv)")


def java_version() -> int:
    """Java's major version; MissingDependency unless it is JAVA_MAJOR or newer (sdspconv runs on Java)."""
    java = shutil.which("java")
    if java is None:
        raise MissingDependency(f"got no java on PATH, expected Java {JAVA_MAJOR} for the IMX500 converter "
                                f"({JAVA_HINT})")
    done = subprocess.run([java, "-version"], capture_output=True, text=True)
    major = parse_java_major(done.stderr + done.stdout)
    if major is None or major < JAVA_MAJOR:
        raise MissingDependency(f"got Java {major or 'of unknown version'}, expected Java {JAVA_MAJOR} or newer "
                                f"for the IMX500 converter ({JAVA_HINT})")
    return major


def parse_java_major(text: str) -> int | None:
    """17 from 'openjdk version "17.0.15" ...'; 8 from the old '"1.8.0_402"' style."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major
