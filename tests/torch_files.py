"""Test helper: write PyTorch zip-layout state dicts without torch, through stand-in `torch` modules."""

from __future__ import annotations

import collections
import io
import pickle
import sys
import types
import zipfile
from contextlib import contextmanager

import numpy as np

STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float16): "HalfStorage",
                 np.dtype(np.int64): "LongStorage", np.dtype(np.uint8): "ByteStorage"}


class Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, np.ascontiguousarray(data).ravel()


class Tensor:
    """Pickles as torch does: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)."""

    def __init__(self, storage: Storage, shape, stride, offset: int = 0):
        self.storage, self.shape, self.stride, self.offset = storage, tuple(shape), tuple(stride), offset

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict())


@contextmanager
def stand_in_torch():
    """Temporarily register modules `torch` and `torch._utils` so pickle can name their globals."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("stand-in, never called")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def tensor_of(key: str, array: np.ndarray, transposed: bool = False) -> Tensor:
    """A Tensor over a fresh storage; `transposed` stores a 2-D array column-major (non-contiguous)."""
    if transposed:
        rows, cols = array.shape
        return Tensor(Storage(key, array.T), array.shape, (1, rows))
    strides = tuple(step // array.itemsize for step in np.array(array, order="C").strides)
    return Tensor(Storage(key, array), array.shape, strides)


def pickle_tree(tree, storages: dict[str, Storage]) -> bytes:
    class StatePickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                storages[obj.key] = obj
                storage_type = getattr(sys.modules["torch"], STORAGE_NAMES[obj.data.dtype])
                return ("storage", storage_type, obj.key, "cpu", obj.data.size)
            return None

    buffer = io.BytesIO()
    StatePickler(buffer, protocol=2).dump(tree)
    return buffer.getvalue()


def write_zip_state_dict(path, arrays: dict[str, np.ndarray], transposed=()) -> None:
    """torch.save's zip layout: archive/data.pkl, archive/data/<key>, archive/version."""
    storages: dict[str, Storage] = {}
    with stand_in_torch():
        tree = collections.OrderedDict((name, tensor_of(str(index), array, name in transposed))
                                       for index, (name, array) in enumerate(arrays.items()))
        data = pickle_tree(tree, storages)
    write_zip(path, data, {key: storage.data.tobytes() for key, storage in storages.items()})


def write_zip(path, data_pkl: bytes, storages: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", b"little")
        for key, raw in storages.items():
            archive.writestr(f"archive/data/{key}", raw)
        archive.writestr("archive/version", b"3\n")
