"""Read PyTorch .pth state dicts into numpy arrays without torch and without an unrestricted pickle.load.

A .pth file is a pickle, and a pickle can name any Python callable; `RestrictedUnpickler` admits only the
globals a tensor state dict needs (tensor rebuilders, storage types, OrderedDict) and refuses the rest.
Two layouts are read: the zip layout (torch >= 1.6: `<root>/data.pkl` + `<root>/data/<key>`) and the
legacy layout (magic, protocol, sys-info pickles, the object pickle, the storage-key list, then each
storage as int64 element count + raw little-endian bytes).
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from allx.errors import ModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
MAX_EXPANSION = 1000  # torch.save stores entries uncompressed; a huge ratio means a zip bomb
# Bounds checked before anything is allocated. The largest backbone allx reads (ResNet50) holds 25.6M
# elements (~100 MB); 2 GiB of tensor data and 16 MiB of pickle leave room for any real state dict.
MAX_TENSOR_BYTES = 2 << 30
MAX_PICKLE_BYTES = 16 << 20
MAX_NODES = 200_000  # values in the pickled tree, shared references counted each time (a state dict: ~1,000)
MAX_DEPTH = 32  # a state dict nests 1-3 levels


@dataclass(frozen=True)
class StorageType:
    """Stands in for torch.FloatStorage etc.: only its element type matters."""

    dtype: type


class Storage:
    """A flat typed buffer; legacy files fill it after the object pickle has been read."""

    def __init__(self, dtype, numel: int):
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.array: np.ndarray | None = None


@dataclass(frozen=True)
class StorageView:
    """Part of a storage (legacy files may pickle views of one root storage)."""

    root: Storage
    offset: int
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor waiting for its storage's bytes: (storage, element offset, shape, strides in elements)."""

    storage: Storage | StorageView
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def rebuild_tensor(storage, storage_offset, size, stride, *unused) -> TensorRef:
    return TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def rebuild_parameter(data, requires_grad=False, backward_hooks=None, *unused):
    return data


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose find_class admits only tensor-rebuild globals; persistent ids name storages."""

    def __init__(self, file, source: str, storages: dict[str, Storage]):
        super().__init__(file)
        self.source = source
        self.storages = storages

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        raise ModelError(
            f"{self.source}: refused to load, the file references {module}.{name}, "
            "expected only tensor data (a PyTorch state dict)"
        )

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and len(saved_id) >= 5 and saved_id[0] == "storage"):
            raise ModelError(f"{self.source}: unexpected persistent id {str(saved_id)[:60]}, expected a storage")
        storage_type, key, _location, numel = saved_id[1:5]
        if not isinstance(storage_type, StorageType):
            raise ModelError(f"{self.source}: unsupported storage type {storage_type!r}")
        if str(key) not in self.storages:
            check_storage_budget(self.storages, storage_type.dtype, int(numel), self.source)
        storage = self.storages.setdefault(str(key), Storage(storage_type.dtype, int(numel)))
        view = saved_id[5] if len(saved_id) > 5 else None
        if view is None:
            return storage
        _view_key, offset, view_numel = view
        return StorageView(storage, int(offset), int(view_numel))


def check_storage_budget(storages: dict[str, Storage], dtype, numel: int, source: str) -> None:
    """Refuse a storage that would take the file's tensor data past MAX_TENSOR_BYTES (or is negative)."""
    total = sum(s.numel * s.dtype.itemsize for s in storages.values()) + numel * np.dtype(dtype).itemsize
    if numel < 0 or total > MAX_TENSOR_BYTES:
        raise ModelError(f"{source}: tensors of {total} bytes (a storage of {numel} elements), expected at most "
                         f"{MAX_TENSOR_BYTES} bytes of weights")


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The flat {name: array} state dict of a .pth file (unwrapping {"state_dict": ...} containers)."""
    tree = read_torch_file(path)
    for key in STATE_DICT_KEYS:
        if isinstance(tree, dict) and isinstance(tree.get(key), dict):
            tree = tree[key]
            break
    if not isinstance(tree, dict) or not tree:
        raise ModelError(f"{path}: got {type(tree).__name__}, expected a PyTorch state dict of tensors")
    arrays = {str(name): value for name, value in tree.items() if isinstance(value, np.ndarray)}
    if not arrays:
        raise ModelError(f"{path}: the file holds no tensors, expected a PyTorch state dict")
    return arrays


def read_torch_file(path: str | Path):
    """The object a torch.save file holds, with every tensor as a numpy array."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such weights file")
    try:
        if zipfile.is_zipfile(path):
            return read_zip_file(path)
        with open(path, "rb") as file:
            return read_legacy_file(file, str(path))
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, zipfile.BadZipFile, OSError, RecursionError, OverflowError) as err:
        raise ModelError(f"{path}: not a readable PyTorch file ({err.__class__.__name__}: {err})") from None


def read_zip_file(path: Path):
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ModelError(f"{path}: got {len(pickles)} data.pkl entries in the zip, expected 1")
        root = pickles[0][: -len("data.pkl")]
        size = archive.getinfo(pickles[0]).file_size
        if size > MAX_PICKLE_BYTES:
            raise ModelError(f"{path}: data.pkl expands to {size} bytes, expected at most {MAX_PICKLE_BYTES} "
                             "(a state dict's pickle is kilobytes)")
        storages: dict[str, Storage] = {}
        tree = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), str(path), storages).load()
        big_endian = f"{root}byteorder" in archive.namelist() and archive.read(f"{root}byteorder") == b"big"
        for key, storage in storages.items():
            data = read_zip_storage(archive, f"{root}data/{key}", storage, str(path))
            dtype = storage.dtype.newbyteorder(">") if big_endian else storage.dtype
            storage.array = np.frombuffer(data, dtype=dtype).astype(storage.dtype)
    return resolve_tensors(tree, str(path))


def read_zip_storage(archive: zipfile.ZipFile, name: str, storage: Storage, source: str) -> bytes:
    """One storage's bytes, after checking its size so a hostile entry cannot exhaust memory."""
    info = archive.getinfo(name)
    expected = storage.numel * storage.dtype.itemsize
    if info.file_size != expected:
        raise ModelError(f"{source}: storage {name} holds {info.file_size} bytes, expected {expected}")
    if info.file_size > MAX_EXPANSION * max(info.compress_size, 1):
        raise ModelError(f"{source}: storage {name} expands {info.file_size / max(info.compress_size, 1):.0f}x, "
                         f"expected at most {MAX_EXPANSION}x (a zip bomb?)")
    return archive.read(info)


def read_legacy_file(file, source: str):
    storages: dict[str, Storage] = {}
    header = [RestrictedUnpickler(file, source, storages).load() for _ in range(3)]
    if header[0] != LEGACY_MAGIC:
        raise ModelError(f"{source}: not a PyTorch file (no zip archive, no legacy magic number)")
    if not isinstance(header[2], dict) or not header[2].get("little_endian", False):
        raise ModelError(f"{source}: got a big-endian or unknown legacy file, expected little-endian")
    tree = RestrictedUnpickler(file, source, storages).load()
    file_size = os.fstat(file.fileno()).st_size
    for key in RestrictedUnpickler(file, source, storages).load():
        storage = storages[str(key)]
        numel = int(np.frombuffer(read_exactly(file, 8, file_size, source), dtype="<i8")[0])
        if numel != storage.numel:
            raise ModelError(f"{source}: storage {key} holds {numel} elements, expected {storage.numel}")
        data = read_exactly(file, numel * storage.dtype.itemsize, file_size, source)
        storage.array = np.frombuffer(data, dtype=storage.dtype)
    return resolve_tensors(tree, source)


def read_exactly(file, count: int, file_size: int, source: str) -> bytes:
    left = file_size - file.tell()
    if count > left:  # checked before reading: a hostile size must not allocate gigabytes
        raise ModelError(f"{source}: truncated file, got {left} bytes left for a storage, expected {count}")
    return file.read(count)


def resolve_tensors(tree, source: str):
    """Replace every TensorRef in nested dicts/lists/tuples by its numpy array.

    The tree is measured first: a pickle can share one list many times over, so a few hundred bytes
    can describe a tree of billions of nodes; its expanded size and depth are bounded before building.
    """
    count_nodes(tree, source)
    return resolve(tree, source)


def count_nodes(tree, source: str) -> None:
    """Walk without building (iteratively, no recursion limit): fail past MAX_DEPTH or MAX_NODES."""
    stack, nodes = [(tree, 1)], 1
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (dict, list, tuple)):
            continue
        children = node.values() if isinstance(node, dict) else node
        nodes += len(children)
        if depth >= MAX_DEPTH or nodes > MAX_NODES:
            what = f"nested deeper than {MAX_DEPTH} levels" if depth >= MAX_DEPTH else f"more than {MAX_NODES} values"
            raise ModelError(f"{source}: the pickled object is {what}, expected a state dict of tensors")
        stack.extend((child, depth + 1) for child in children)


def resolve(tree, source: str):
    if isinstance(tree, TensorRef):
        return tensor_array(tree, source)
    if isinstance(tree, dict):
        resolved = type(tree)() if isinstance(tree, collections.OrderedDict) else {}
        for key, value in tree.items():
            resolved[key] = resolve(value, source)
        return resolved
    if isinstance(tree, (list, tuple)):
        return type(tree)(resolve(value, source) for value in tree)
    return tree


def tensor_array(ref: TensorRef, source: str) -> np.ndarray:
    storage, base = (ref.storage.root, ref.storage.offset) if isinstance(ref.storage, StorageView) else (ref.storage, 0)
    if storage.array is None:
        raise ModelError(f"{source}: a tensor's storage has no data in the file")
    flat = storage.array[base + ref.offset:]
    if any(size == 0 for size in ref.shape):
        return np.zeros(ref.shape, dtype=storage.dtype)
    last = sum((size - 1) * step for size, step in zip(ref.shape, ref.stride))
    # A state dict tensor never repeats storage elements; refusing that bounds the copy below.
    if (len(ref.shape) != len(ref.stride) or min(ref.stride, default=0) < 0 or last >= len(flat)
            or math.prod(ref.shape) > len(flat)):
        raise ModelError(f"{source}: a tensor of shape {ref.shape} does not fit its storage")
    strides = tuple(step * storage.dtype.itemsize for step in ref.stride)
    return np.lib.stride_tricks.as_strided(flat, shape=ref.shape, strides=strides).copy()


def keras_arrays(state_dict: dict[str, np.ndarray], prefix: str, kind: str) -> list[np.ndarray]:
    """The Keras weight list of one layer from the torch tensors under `prefix`.

    conv (out,in,kh,kw) -> (kh,kw,in,out); depthwise (C,1,kh,kw) -> (kh,kw,C,1); dense transposed;
    BatchNorm as gamma, beta, moving mean, moving variance.
    """
    if kind == "conv":
        arrays = [state_dict[f"{prefix}.weight"].transpose(2, 3, 1, 0)]
    elif kind == "dwconv":
        arrays = [state_dict[f"{prefix}.weight"].transpose(2, 3, 0, 1)]
    elif kind == "dense":
        arrays = [state_dict[f"{prefix}.weight"].T]
    elif kind == "bn":
        return [state_dict[f"{prefix}.{name}"] for name in ("weight", "bias", "running_mean", "running_var")]
    else:
        raise ValueError(f"got layer kind {kind!r}, expected conv, dwconv, dense or bn")
    if f"{prefix}.bias" in state_dict:
        arrays.append(state_dict[f"{prefix}.bias"])
    return arrays


def mobilenet_mapping(stem: tuple[str, str, str], blocks, head: tuple[str, str, str],
                      top: str | None) -> list[tuple[str, str, str]]:
    """(keras layer, torch name, kind) of every weighted layer of a MobileNet-style network: the stem and the head
    as (keras prefix, torch conv, torch batch norm), the blocks as inverted_residual_mapping's arguments, and the
    classifier `top` (a torch name) when it is kept."""
    mapping = conv_bn_mapping(*stem)
    for block in blocks:
        mapping += inverted_residual_mapping(*block)
    return mapping + conv_bn_mapping(*head) + ([("predictions", top, "dense")] if top else [])


def inverted_residual_mapping(block: str, expand: tuple[str, str] | None, depthwise: tuple[str, str],
                              project: tuple[str, str]) -> list[tuple[str, str, str]]:
    """One block, whose Keras layers are named {block}_expand_*, {block}_dw_*, {block}_project_*: an optional
    1x1 expansion, the depthwise conv and the 1x1 projection, each a (conv, batch norm) pair of torch names."""
    expansion = [] if expand is None else conv_bn_mapping(f"{block}_expand", *expand)
    return expansion + [(f"{block}_dw_conv", depthwise[0], "dwconv"), (f"{block}_dw_bn", depthwise[1], "bn"),
                        *conv_bn_mapping(f"{block}_project", *project)]


def conv_bn_mapping(layer: str, conv: str, bn: str) -> list[tuple[str, str, str]]:
    return [(f"{layer}_conv", conv, "conv"), (f"{layer}_bn", bn, "bn")]


def assign_torch_weights(model, state_dict, mapping, source: str, architecture: str) -> None:
    """Set each (keras_layer_name, torch_prefix, kind) of `mapping` from the state dict, checking shapes."""
    for layer_name, prefix, kind in mapping:
        layer = model.get_layer(layer_name)
        try:
            arrays = keras_arrays(state_dict, prefix, kind)
        except KeyError as err:
            raise ModelError(f"{source}: missing tensor {err.args[0]}, expected a {architecture} state dict") from None
        expected = [tuple(weight.shape) for weight in layer.weights]
        got = [array.shape for array in arrays]
        if got != expected:
            raise ModelError(
                f"{source}: {prefix} has shapes {got}, expected {expected} (not a {architecture} state dict?)"
            )
        layer.set_weights([np.ascontiguousarray(array, dtype=np.float32) for array in arrays])
