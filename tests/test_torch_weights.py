"""The restricted .pth reader: real tensors come back as numpy, anything that executes code is refused."""

import builtins
import os
import pickletools
import pickle

import numpy as np
import pytest

from allx.errors import ModelError
from torch_files import Storage, Tensor, pickle_tree, stand_in_torch, write_zip, write_zip_state_dict
from allx.train.efficientnet_lite import packaged_weights_path
from allx.train.torch_weights import load_state_dict, read_torch_file


class RunsCommand:
    """A pickle payload that would run a shell command if unpickled without restriction."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def payloads(marker):
    return {
        "os.system": RunsCommand(os.system, f"touch {marker}"),
        "builtins.eval": RunsCommand(builtins.eval, f"open({str(marker)!r}, 'w')"),
        "builtins.exec": RunsCommand(builtins.exec, f"open({str(marker)!r}, 'w')"),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "builtins.exec"])
def test_malicious_legacy_pickle_is_refused_without_running(tmp_path, name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(payloads(marker)[name], protocol=2))
    with pytest.raises(ModelError, match="refused to load"):
        load_state_dict(path)
    assert not marker.exists()


def test_malicious_pickle_inside_zip_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    write_zip(path, pickle.dumps({"weight": payloads(marker)["os.system"]}, protocol=2), {})
    with pytest.raises(ModelError, match=r"refused to load, the file references (posix|os)\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_zip_layout_round_trips_values_dtypes_and_strides(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "conv.weight": rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
        "fc.weight": rng.normal(size=(5, 7)).astype(np.float32),
        "half": rng.normal(size=(4,)).astype(np.float16),
        "bn.num_batches_tracked": np.array(12, dtype=np.int64),
    }
    path = tmp_path / "small.pth"
    write_zip_state_dict(path, arrays, transposed=("fc.weight",))
    loaded = load_state_dict(path)
    assert list(loaded) == list(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


def test_packaged_efficientnet_file_loads_as_numpy():
    state_dict = load_state_dict(packaged_weights_path())
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert state_dict["_fc.weight"].dtype == np.float32
    assert len([name for name in state_dict if name.endswith("_depthwise_conv.weight")]) == 16
    assert all(np.isfinite(array).all() for array in state_dict.values())
    # Variances are never negative (dead channels give 0): misplaced storage bytes would break this.
    assert all(array.min() >= 0 for name, array in state_dict.items() if name.endswith("running_var"))


def test_truncated_legacy_file_is_a_model_error(tmp_path):
    path = tmp_path / "cut.pth"
    path.write_bytes(packaged_weights_path().read_bytes()[:500_000])
    with pytest.raises(ModelError, match="truncated"):
        load_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", pickle.dumps([1, 2, 3])])
def test_non_torch_files_are_model_errors(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(ModelError):
        load_state_dict(path)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no such weights file"):
        read_torch_file(tmp_path / "absent.pth")


def write_one_tensor(path, tensor: Tensor, raw: bytes) -> None:
    storages = {}
    with stand_in_torch():
        data = pickle_tree({"w": tensor}, storages)
    write_zip(path, data, {key: raw for key in storages})


def test_a_tensor_larger_than_its_storage_is_refused(tmp_path):
    path = tmp_path / "expanded.pth"
    one = np.ones(1, np.float32)
    write_one_tensor(path, Tensor(Storage("0", one), shape=(10**9,), stride=(0,)), one.tobytes())
    with pytest.raises(ModelError, match="does not fit its storage"):
        load_state_dict(path)


def test_a_storage_entry_of_the_wrong_size_is_refused(tmp_path):
    path = tmp_path / "short.pth"
    values = np.arange(6, dtype=np.float32)
    write_one_tensor(path, Tensor(Storage("0", values), shape=(6,), stride=(1,)), values[:4].tobytes())
    with pytest.raises(ModelError, match="holds 16 bytes, expected 24"):
        load_state_dict(path)


def test_a_legacy_storage_claiming_more_bytes_than_the_file_is_refused(tmp_path):
    """Patch the first storage's element count to 2**40: refused before any allocation."""
    source = packaged_weights_path()
    with open(source, "rb") as file:
        for _ in range(5):  # magic, protocol, sys info, the state dict, the storage keys
            for _ in pickletools.genops(file):  # walks opcodes only: executes nothing
                pass
        at = file.tell()
    original = source.read_bytes()
    numel = int(np.frombuffer(original[at:at + 8], "<i8")[0])
    path = tmp_path / "huge.pth"
    path.write_bytes(original[:at] + np.array([2**40], "<i8").tobytes() + original[at + 8:])
    with pytest.raises(ModelError, match=f"holds {2**40} elements, expected {numel}"):
        load_state_dict(path)
