"""Write TensorFlow.js layers models (model.json + shards) from named numpy arrays, as tfjs-converter does."""

import json
import tarfile
from pathlib import Path

import numpy as np


def write_tfjs(folder: Path, tensors: dict[str, np.ndarray], shard_bytes: int = 4096, extra: dict | None = None) -> Path:
    """model.json and group1-shard{i}of{n}.bin in `folder` (tensors concatenated, cut every shard_bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = b"".join(np.ascontiguousarray(array, dtype="<f4").tobytes() for array in tensors.values())
    count = max(1, -(-len(buffer) // shard_bytes))
    paths = [f"group1-shard{i}of{count}.bin" for i in range(1, count + 1)]
    for index, name in enumerate(paths):
        (folder / name).write_bytes(buffer[index * shard_bytes:(index + 1) * shard_bytes])
    manifest = [{"paths": paths, "weights": [{"name": name, "shape": list(array.shape), "dtype": "float32"}
                                             for name, array in tensors.items()]}]
    model = {"format": "layers-model", "generatedBy": "keras v2.2.4-tf", "convertedBy": "test",
             "modelTopology": {"model_config": {"class_name": "Model"}}, "weightsManifest": manifest, **(extra or {})}
    (folder / "model.json").write_text(json.dumps(model))
    return folder


def pack_tarball(folder: Path, tarball: Path) -> Path:
    """An npm-style tarball: the model's files under package/<folder name>/."""
    with tarfile.open(tarball, "w:gz") as archive:
        for path in sorted(folder.iterdir()):
            archive.add(path, arcname=f"package/{folder.name}/{path.name}")
    return tarball


def keras_old_names(model) -> dict[str, np.ndarray]:
    """A keras.applications.ResNet50's weights under Keras 2.2.4's names (res2a_branch2a, bn_conv1, fc1000)."""
    from allx.train.resnet50_import import resnet50_mapping
    from allx.train.weight_mapping import weight_name

    include_top = any(layer.name == "predictions" for layer in model.layers)
    tensors = {}
    for layer_name, prefix, _kind in resnet50_mapping(include_top, old_names=True):
        for weight in model.get_layer(layer_name).weights:
            tensors[f"{prefix}/{weight_name(weight)}"] = np.asarray(weight.numpy())
    return tensors
