"""Shared fixtures: small generated image sets, and the real data set when ../shared/data is there."""

import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ALL_ORIGINAL = SHARED_DATA / "all-taleqani" / "Original"
PBC_LYMPHOCYTES = SHARED_DATA / "pbc-lymphocytes"


@pytest.fixture(autouse=True)
def private_user_folders(tmp_path_factory, monkeypatch):
    """allx-edge writes its audit log under the user's data folder and reads site.json from the config
    folder; `allx weights import` keeps weights in the cache folder: tests get their own, so they never
    touch the real ones (nor each other's site config), and never find weights a user imported."""
    home = tmp_path_factory.mktemp("user")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("ALLX_WEIGHTS_DIR", str(home / "weights"))
    monkeypatch.delenv("ALLX_SITE_CONFIG", raising=False)


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handler for a test that sends itself SIGINT. A pytest started in the background
    (`pytest &`, a CI job) inherits SIGINT ignored, and then no KeyboardInterrupt would ever come."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session", autouse=True)
def private_feature_cache(tmp_path_factory):
    """One feature cache per test process (a CLI started by a test inherits it): with pytest-xdist two workers
    never write the same entry at once, and no test reads or fills the user's own ~/.cache/allx. Tests that
    need a cache of their own still pass ALLX_CACHE_DIR explicitly."""
    previous = os.environ.get("ALLX_CACHE_DIR")
    os.environ["ALLX_CACHE_DIR"] = str(tmp_path_factory.mktemp("allx-cache"))
    yield
    if previous is None:
        os.environ.pop("ALLX_CACHE_DIR", None)
    else:
        os.environ["ALLX_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """4 classes x 16 generated 48x48 JPEGs (read-only by convention: copy before changing)."""
    from allx.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("synthetic") / "data", per_class=16, size=48, seed=0)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    if not ALL_ORIGINAL.is_dir():
        pytest.skip(f"real data set absent: {ALL_ORIGINAL} (see ../shared/data/README.md)")
    return ALL_ORIGINAL


@pytest.fixture(scope="session")
def ood_data_dir() -> Path:
    if not PBC_LYMPHOCYTES.is_dir():
        pytest.skip(f"out-of-distribution data set absent: {PBC_LYMPHOCYTES}")
    return PBC_LYMPHOCYTES


@pytest.fixture(scope="session")
def numbered_dir(tmp_path_factory) -> Path:
    """4 classes x 12 generated 32 px images named cell-1.jpg .. cell-12.jpg (read-only by convention)."""
    from tests.cv_runs import make_numbered_dir

    return make_numbered_dir(tmp_path_factory.mktemp("cv") / "data")


@pytest.fixture(scope="session")
def cv_run(numbered_dir, tmp_path_factory):
    """(CLI outcome, run folder, feature cache) of one tiny 3-fold `allx train --cv`."""
    from tests.cv_runs import run_tiny_cv

    out = tmp_path_factory.mktemp("cvrun") / "run"
    cache = out.parent / "cache"
    return run_tiny_cv(numbered_dir, out, cache), out, cache
