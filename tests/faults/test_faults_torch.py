"""--weights FILE.pth: bounded nesting, bounded expanded size, bounded tensor bytes, before anything is built."""

import collections
import pickle
import resource
import zipfile

import numpy as np
import pytest
from torch_files import stand_in_torch, pickle_tree, tensor_of, write_zip, write_zip_state_dict

from allx.errors import ModelError
from allx.train import torch_weights
from allx.train.torch_weights import load_state_dict


def shared_list_bomb(levels: int) -> bytes:
    """A tiny pickle whose tree doubles at every level through shared references (4x per two levels)."""
    node = []
    for _ in range(levels):
        node = [node, node]
    return pickle.dumps({"weight": node}, protocol=2)


def test_shared_list_bomb_is_refused_without_expanding(tmp_path):
    path = tmp_path / "bomb.pth"
    write_zip(path, shared_list_bomb(60), {})
    assert path.stat().st_size < 2000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ModelError, match="more than|nested deeper"):
        load_state_dict(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200, f"the reader grew by {grown_mb:.0f} MB on a bomb"


def test_deep_nesting_is_a_model_error_not_a_traceback(tmp_path):
    nested = b"]" * 5000 + b"a" * 4999  # EMPTY_LIST x5000, APPEND x4999: one list 5000 levels deep
    data = b"\x80\x02}X\x06\x00\x00\x00weight" + nested + b"s."  # pickle.dumps itself would recurse
    assert pickle.loads(data)["weight"]
    path = tmp_path / "deep.pth"
    write_zip(path, data, {})
    with pytest.raises(ModelError, match="nested deeper"):
        load_state_dict(path)


def test_compressed_data_pkl_that_expands_hugely_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_weights, "MAX_PICKLE_BYTES", 100_000)
    path = tmp_path / "zipbomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"a": "x" * 1_000_000}, protocol=2))
    assert path.stat().st_size < 20_000
    with pytest.raises(ModelError, match="data.pkl expands to"):
        load_state_dict(path)


def test_tensor_bytes_over_the_bound_are_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.pth"
    write_zip_state_dict(path, {"a.weight": np.ones((64, 64), np.float32), "b.weight": np.ones((64, 64), np.float32)})
    assert set(load_state_dict(path)) == {"a.weight", "b.weight"}
    monkeypatch.setattr(torch_weights, "MAX_TENSOR_BYTES", 64 * 64 * 4 + 100)
    with pytest.raises(ModelError, match="expected at most"):
        load_state_dict(path)


def test_a_storage_claiming_billions_of_elements_is_refused(tmp_path):
    with stand_in_torch():
        tensor = tensor_of("0", np.zeros(4, np.float32))
        storages = {}
        data = pickle_tree(collections.OrderedDict(w=tensor), storages)
    data = data.replace(b"K\x04", b"J\x00\x00\x00\x7f", 1)  # BININT1 4 -> BININT 2**31-ish elements
    path = tmp_path / "claims.pth"
    write_zip(path, data, {"0": np.zeros(4, np.float32).tobytes()})
    with pytest.raises(ModelError, match="expected at most .* bytes of weights"):
        load_state_dict(path)
