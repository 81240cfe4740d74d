"""`allx-edge` runs where TensorFlow cannot be imported, picks its interpreter in order, and starts light."""

import json
import os
import subprocess
import sys

import pytest
from edge_models import tiny_models
from PIL import Image

HEAVY = ("tensorflow", "keras", "matplotlib", "sklearn", "cv2", "torch")
RUN_CLI = "import sys; from allx.edge_runner.cli import app; sys.argv[0] = 'allx-edge'; app()"


def blocker_dir(tmp_path, *packages):
    """A folder that, first on PYTHONPATH, makes `import <package>` fail as if it were not installed."""
    folder = tmp_path / "blocked"
    for package in packages:
        (folder / package).mkdir(parents=True)
        (folder / package / "__init__.py").write_text(f"raise ImportError('{package} is blocked for this test')\n")
    return folder


def run_cli(args, blocked=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if blocked is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(blocked)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return subprocess.run([sys.executable, "-c", RUN_CLI, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "cell.png"
    Image.new("RGB", (40, 40), (200, 120, 180)).save(path)
    return path


def test_start_up_imports_nothing_heavy():
    code = ("import sys, json, allx.edge_runner.cli, allx.edge_runner.model, allx.edge_runner.batch, allx.edge_runner.bench, "
            "allx.edge_runner.info, allx.edge_runner.metadata; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))" % (HEAVY,))
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == []


def test_start_up_leaves_the_other_commands_code_unloaded():
    """classify must start fast: the camera, bench, info and serve code loads inside its own command."""
    other = ("allx.edge_runner.camera", "allx.edge_runner.bench", "allx.edge_runner.info",
             "allx.edge_runner.serve.server", "rich.progress")
    code = "import sys, json, allx.edge_runner.cli; print(json.dumps(sorted(m for m in sys.modules if m in %r)))" % (other,)
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == []


def test_classify_loads_only_what_it_uses(tmp_path, image):
    """A whole classify run, to its result line: no rich (plain lines need none), no generated TFLite schema module
    (the embedded metadata is read with flatbuffers' table reader), and none of the code of the options it was not
    given (occlusion maps) or of the other commands (monitor's report, bench, camera)."""
    unused = ("rich", "ai_edge_litert.schema_py_generated", "allx.edge_runner.explain", "allx.edge_runner.monitor_view",
              "allx.edge_runner.camera", "allx.edge_runner.bench", "allx.edge_runner.info", "allx.edge_runner.serve")
    code = ("import atexit, json, sys\n"
            "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n" + RUN_CLI)
    result = subprocess.run([sys.executable, "-c", code, "classify", str(image), "--model", str(tiny_models().int8),
                             "--json", "--no-log"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] in ("Benign", "Early", "Pre", "Pro")
    loaded = json.loads(result.stderr.strip().splitlines()[-1])
    assert "allx.edge_runner.model" in loaded  # the list is the run's own
    assert [name for name in loaded if name.split(".")[0] in unused or name.startswith(unused)] == []


def test_classifies_where_tensorflow_cannot_be_imported(tmp_path, image):
    blocked = blocker_dir(tmp_path, "tensorflow", "keras")
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=str(blocked)))
    assert "blocked for this test" in probe.stderr  # the blocker works
    result = run_cli(["classify", image, "--model", tiny_models().int8, "--json"], blocked)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] in ("Benign", "Early", "Pre", "Pro")
    assert "Traceback" not in result.stderr


def test_no_interpreter_at_all_is_one_line(tmp_path, image):
    blocked = blocker_dir(tmp_path, "tensorflow", "ai_edge_litert", "tflite_runtime")
    result = run_cli(["classify", image, "--model", tiny_models().int8], blocked)
    assert result.returncode == 2
    assert "error: no TFLite interpreter found" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_falls_back_to_tensorflow_lite(tmp_path):
    blocked = blocker_dir(tmp_path, "ai_edge_litert", "tflite_runtime")
    result = run_cli(["info", tiny_models().int8], blocked)
    assert result.returncode == 0, result.stderr
    assert "runtime   tensorflow.lite" in result.stdout
