"""The model's own description inside the .tflite: the allx manifest and its side files, without TensorFlow.

A TFLite model carries named metadata entries (`Model.metadata`: a name and the index of a buffer in
`Model.buffers`); the converter itself writes "min_runtime_version" and "CONVERSION_METADATA" there,
and TFLite Support writes "TFLITE_METADATA". `allx convert` adds two kinds of entry:

    allx.manifest        the model's model.json as UTF-8 JSON (labels, precision, input/output
                         quantization, check, thresholds, OOD section, source hashes, ...)
    allx.file/<name>     a side file the manifest names (e.g. ood_stats_int8.npz), byte for byte

so one copied .tflite is the whole model. The entries are read with `flatbuffers`' own table reader, at
the few fields of schema.fbs they need (the TFLite schema module of ai-edge-litert, 19,000 generated lines,
took longer to import than the rest of the read), and written with ai-edge-litert's
`tools.flatbuffer_utils` (by `allx convert` and by `allx-edge calibrate`).
When the embedded copy and the files beside the model disagree, the embedded copy wins and says so.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from allx import layout
from allx.edge_runner.manifest_check import Manifest, check_manifest
from allx.edge_runner.status import is_rejected
from allx.errors import MissingDependency, ModelError
from allx.jsonio import parse_json

MANIFEST_ENTRY = "allx.manifest"
FILE_PREFIX = "allx.file/"
FORMAT_NAME = "allx-tflite"
FORMAT_VERSION = 1  # the newest manifest format this runner reads
TFLITE_IDENTIFIER = b"TFL3"
MAX_MANIFEST_BYTES = 1024 * 1024  # allx convert writes a few kilobytes; statistics travel as side files

# The fields of the TFLite schema (schema.fbs) read here, as vtable offsets (4 + 2 x the field's id):
# Model.buffers (id 4), Model.metadata (6); Metadata.name (0), .buffer (1); Buffer.data (0), .offset (1),
# .size (2). A flatbuffer field keeps its id for good (new fields are appended), so these never move.
MODEL_BUFFERS, MODEL_METADATA = 12, 16
METADATA_NAME, METADATA_BUFFER = 4, 6
BUFFER_DATA, BUFFER_OFFSET, BUFFER_SIZE = 4, 6, 8

# Features a converted model can carry: code -> (manifest key, words, key of convert's note on why it is
# absent). A model without the key runs without the feature, and allx-edge says so once (stderr and the
# JSON's "features_off").
FEATURES = {
    "ood": ("ood", "out-of-distribution flag", "ood_note"),
    "quality": ("quality", "image-quality check", "quality_note"),
    "operating_point": ("operating_point", "operating point", "operating_note"),
}


class MetadataSource:
    """Where the manifest in use came from (the code JSON carries)."""

    EMBEDDED = "embedded"
    MANIFEST_FILE = layout.MANIFEST
    NONE = "none"


@dataclass(frozen=True)
class Embedded:
    manifest: dict
    files: dict[str, bytes]


@dataclass(frozen=True)
class ManifestFile:
    """A model.json (or model_<precision>.json) as read when the model was resolved: the checked Manifest,
    the file, and the sha256 of the bytes parsed. The empty one stands for "no manifest file"."""

    manifest: Manifest = Manifest()
    path: Path | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class ModelCard:
    """What allx-edge runs with, read once when the model is resolved: the manifest in force (the embedded copy
    when there is one) and where it came from, side files, the sha256 of the .tflite and of its manifest file,
    and whether the model is a rejected one. Admission, provenance, serve's Model page and `info` read it;
    nothing hashes or reads the files again."""

    path: Path
    sha256: str
    manifest: Manifest
    files: dict[str, bytes]  # embedded side files by name (empty when the manifest came from a folder)
    source: str  # a MetadataSource value
    overridden: tuple[str, ...]  # what the embedded copy won over: "model.json", "labels.txt", "--labels"
    features_off: tuple[str, ...]  # codes of FEATURES the model runs without
    warnings: tuple[str, ...]
    labels: tuple[str, ...] = ()  # set by choose_labels
    manifest_path: Path | None = None  # the manifest file whose document is the one in force, if any
    manifest_sha256: str | None = None  # of that file's bytes
    content: bytes = field(default=b"", repr=False, compare=False)  # the .tflite's bytes: the interpreter's too

    @property
    def rejected(self) -> bool:
        """The manifest in force says status rejected, or the file has allx convert's rejected name."""
        return is_rejected(self.manifest, self.path)


def read_card(model_path: Path, folder: ManifestFile | Manifest, data: bytes | None = None) -> ModelCard:
    """Read the model file once (or take its bytes, `data`): its sha256 and its embedded metadata (checked into
    a Manifest here, as model.json is where it is read), reconciled with the folder's manifest file."""
    folder = folder if isinstance(folder, ManifestFile) else ManifestFile(folder)
    folder_manifest = folder.manifest
    data = read_model_bytes(model_path) if data is None else data
    embedded = read_embedded(data, model_path)
    sha256 = hashlib.sha256(data).hexdigest()
    if embedded is None:
        source = MetadataSource.MANIFEST_FILE if folder_manifest else MetadataSource.NONE
        return finish_card(model_path, sha256, folder_manifest, {}, source, (), folder, data)
    manifest = check_manifest(embedded.manifest, f"{model_path} (embedded metadata)")
    overridden = ()
    if folder_manifest and without_file_name(folder_manifest.document) != without_file_name(embedded.manifest):
        overridden = (layout.MANIFEST,)
    beside = model_path.parent / layout.LABELS
    if not folder_manifest and model_path.is_file() and beside.is_file() and labels_in(beside) != manifest.labels:
        overridden += (layout.LABELS,)
    in_force = folder if folder_manifest and folder_manifest.document == embedded.manifest else ManifestFile()
    return finish_card(model_path, sha256, manifest, embedded.files, MetadataSource.EMBEDDED, overridden, in_force,
                       data)


def finish_card(model_path: Path, sha256: str, manifest: Manifest, files: dict, source: str,
                overridden: tuple[str, ...], manifest_file: ManifestFile, data: bytes) -> ModelCard:
    off = tuple(code for code, (key, _, _) in FEATURES.items() if not manifest.document.get(key))
    warnings = [override_warning(model_path, what) for what in overridden]
    if off:
        warnings.append(features_off_warning(model_path, manifest, off, source))
    return ModelCard(model_path, sha256, manifest, files, source, overridden, off, tuple(warnings),
                     manifest_path=manifest_file.path, manifest_sha256=manifest_file.sha256, content=data)


def choose_labels(card: ModelCard, labels: tuple[str, ...], given: bool) -> ModelCard:
    """The card with its labels: a model can never be paired with the wrong ones, so the embedded labels win
    over --labels (with a warning)."""
    embedded = card.manifest.labels
    if card.source != MetadataSource.EMBEDDED or not given or not embedded or labels == embedded:
        return replace(card, labels=labels)
    return replace(card, labels=embedded, overridden=(*card.overridden, "--labels"),
                   warnings=(override_warning(card.path, "--labels"), *card.warnings))


def override_warning(model_path: Path, what: str) -> str:
    return (f"{what} disagrees with the metadata embedded in {model_path.name}: using the embedded copy "
            "(it travels with the model)")


def features_off_warning(model_path: Path, manifest: Manifest, off: tuple[str, ...], source: str) -> str:
    words = ", ".join(FEATURES[code][1] for code in off)
    if source == MetadataSource.NONE:
        why = (f"{model_path.name} carries no allx metadata and has no {layout.MANIFEST} beside it; "
               "convert it with allx convert")
    else:
        notes = [f"{FEATURES[code][1]}: {manifest.document[FEATURES[code][2]]}" for code in off
                 if manifest.document.get(FEATURES[code][2])]  # why allx convert left it out
        where = "the model's embedded metadata" if source == MetadataSource.EMBEDDED else layout.MANIFEST
        why = "; ".join([f"no statistics for {'it' if len(off) == 1 else 'them'} in {where}", *notes])
    return f"running without: {words} ({why})"


def without_file_name(manifest: dict) -> dict:
    """A manifest minus the file name it was written under (a renamed copy is still the same model)."""
    return {key: value for key, value in manifest.items() if key != "model_file"}


def labels_in(path: Path) -> tuple[str, ...]:
    try:
        return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError):
        return ()


def read_model_bytes(model_path: Path) -> bytes:
    try:
        if model_path.exists() and not model_path.is_file():  # a FIFO or device would block the read forever
            raise ModelError(f"{model_path}: not a regular file, expected a .tflite file or a folder written by "
                             "allx convert")
        return model_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"{model_path}: no such model file, expected a .tflite file or a folder written by "
                         "allx convert") from None
    except OSError as err:
        raise ModelError(f"{model_path}: cannot read the model ({err.strerror or err.__class__.__name__})") from None


def read_embedded(data: bytes, model_path: Path) -> Embedded | None:
    """The allx entries of a .tflite, checked; None when it has none (or is no TFLite flatbuffer at all:
    the interpreter then says what is wrong with it)."""
    if data[4:8] != TFLITE_IDENTIFIER:
        return None
    entries = allx_entries(data, model_path)
    if MANIFEST_ENTRY not in entries:
        return None
    manifest = parse_manifest(entries.pop(MANIFEST_ENTRY), model_path)
    files = {name[len(FILE_PREFIX):]: value for name, value in entries.items() if name.startswith(FILE_PREFIX)}
    stats_file = (manifest.get("ood") or {}).get("stats_file") if isinstance(manifest.get("ood"), dict) else None
    if stats_file and stats_file not in files:
        raise ModelError(f"{model_path}: embedded metadata names {stats_file} but the model carries no such file "
                         f"(got {sorted(files) or 'none'}), expected it embedded: convert the model again")
    return Embedded(manifest, files)


def allx_entries(data: bytes, model_path: Path) -> dict[str, bytes]:
    """name -> bytes of every metadata entry whose name starts with "allx." (the converter's own are skipped)."""
    table = flatbuffer_table()
    if table is None:
        if MANIFEST_ENTRY.encode() not in data:
            return {}
        raise MissingDependency(f"{model_path}: the model carries allx metadata but this install cannot read it "
                         "(the flatbuffers package is missing), expected ai-edge-litert >= 1.2, which brings it: "
                         'pip install "allx[edge]"')
    found = {}
    try:
        model = table(data, struct.unpack_from("<I", data, 0)[0])
        for i in range(vector_length(model, MODEL_METADATA)):
            entry = vector_table(model, MODEL_METADATA, i)
            name = field_bytes(entry, METADATA_NAME, string=True).decode("utf-8")
            if name.startswith("allx."):
                found[name] = buffer_bytes(model, field_uint(entry, METADATA_BUFFER, "<I"), data)
    except (IndexError, ValueError, TypeError, OverflowError, struct.error) as err:  # offsets past the end, bad text
        raise ModelError(f"{model_path}: corrupt metadata in the model flatbuffer ({err.__class__.__name__}), "
                         "expected a .tflite written by allx convert: copy or convert it again") from None
    return found


def buffer_bytes(model, index: int, data: bytes) -> bytes:
    """A buffer's bytes: inside the flatbuffer, or (models over 2 GB) at offset/size after it."""
    count = vector_length(model, MODEL_BUFFERS)
    if not 0 <= index < count:
        raise IndexError(f"buffer {index} of {count}")
    buffer = vector_table(model, MODEL_BUFFERS, index)
    offset, size = field_uint(buffer, BUFFER_OFFSET, "<Q"), field_uint(buffer, BUFFER_SIZE, "<Q")
    if offset > 1:
        if offset + size > len(data):
            raise IndexError("buffer past the end of the file")
        return bytes(data[offset:offset + size])
    return field_bytes(buffer, BUFFER_DATA)


def vector_length(table, field: int) -> int:
    """The length of a table's vector field (0 when it is absent)."""
    where = table.Offset(field)
    return table.VectorLen(where) if where else 0


def vector_table(table, field: int, index: int):
    """Element `index` of a table's vector of tables (the caller keeps it below vector_length)."""
    return type(table)(table.Bytes, table.Indirect(table.Vector(table.Offset(field)) + 4 * index))


def field_uint(table, field: int, layout: str) -> int:
    """An unsigned scalar field ("<I": uint32, "<Q": uint64); 0, the schema's default, when it is absent."""
    where = table.Offset(field)
    return struct.unpack_from(layout, table.Bytes, table.Pos + where)[0] if where else 0


def field_bytes(table, field: int, string: bool = False) -> bytes:
    """A [ubyte] vector or a string field's bytes (b"" when absent); past the end of the file: IndexError."""
    where = table.Offset(field)
    if not where:
        return b""
    start = table.Indirect(table.Pos + where) + 4 if string else table.Vector(where)
    length = table.VectorLen(where) if not string else struct.unpack_from("<I", table.Bytes, start - 4)[0]
    if start + length > len(table.Bytes):
        raise IndexError("vector past the end of the file")
    return bytes(table.Bytes[start:start + length])


def parse_manifest(raw: bytes, model_path: Path) -> dict:
    if len(raw) > MAX_MANIFEST_BYTES:  # refused before any decoding or scanning
        raise ModelError(f"{model_path}: embedded manifest of {len(raw):,} bytes, expected at most "
                         f"{MAX_MANIFEST_BYTES:,}: copy or convert the model again")
    try:  # with allx.jsonio's limits: the bytes come from whoever made the file
        manifest = parse_json(raw.decode("utf-8"), "the manifest", ModelError)
    except (UnicodeDecodeError, ModelError) as err:
        why = "not UTF-8" if isinstance(err, UnicodeDecodeError) else str(err)
        raise ModelError(f"{model_path}: corrupt embedded metadata ({why}), expected the JSON "
                         "manifest allx convert writes: copy or convert the model again") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{model_path}: corrupt embedded metadata (a JSON {type(manifest).__name__}), expected an "
                         "object: copy or convert the model again")
    check_format(str(manifest.get("format", "")), model_path)
    return manifest


def check_format(fmt: str, model_path: Path) -> None:
    """"allx-tflite/N": N newer than this runner reads is refused (its fields may mean something else)."""
    match = re.fullmatch(rf"{FORMAT_NAME}/(\d+)", fmt)
    if match is None:
        raise ModelError(f"{model_path}: embedded metadata has format {fmt!r}, expected "
                         f"'{FORMAT_NAME}/{FORMAT_VERSION}'")
    if int(match.group(1)) > FORMAT_VERSION:
        raise ModelError(f"{model_path}: embedded metadata is {fmt}, newer than this allx-edge reads "
                         f"({FORMAT_NAME}/{FORMAT_VERSION}): upgrade allx on this device")


def metadata_tools():
    """ai-edge-litert's flatbuffer utilities and schema (the maintained TFLite model reader/writer)."""
    try:
        from ai_edge_litert import schema_py_generated
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError as err:
        raise MissingDependency(f"cannot embed the manifest in the .tflite: {err}; expected an ai-edge-litert that "
                                "ships tools.flatbuffer_utils (pip install -U ai-edge-litert)") from None
    return flatbuffer_utils, schema_py_generated


def embed_metadata(tflite: bytes, manifest: dict, files: dict[str, bytes]) -> bytes:
    """The model with its manifest and side files as named metadata entries, replacing any allx entries it had
    (`allx convert` writes them; `allx-edge calibrate` writes them again with the site's thresholds)."""
    return embed_entries(tflite, {MANIFEST_ENTRY: json.dumps(manifest, sort_keys=True).encode("utf-8"),
                                  **{FILE_PREFIX + name: data for name, data in files.items()}})


def embed_entries(tflite: bytes, entries: dict[str, bytes]) -> bytes:
    """One buffer and one `Model.metadata` entry per name; the converter's own entries are kept."""
    flatbuffer_utils, schema = metadata_tools()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    kept = []
    for entry in model.metadata or []:
        name = entry.name.decode("utf-8") if isinstance(entry.name, bytes) else str(entry.name)
        if name.startswith("allx."):
            model.buffers[entry.buffer].data = None  # an old allx entry: its bytes go, the buffer slot stays empty
        else:
            kept.append(entry)
    model.metadata = kept
    for name, data in entries.items():
        model.buffers.append(schema.BufferT(data=np.frombuffer(data, np.uint8)))
        model.metadata.append(schema.MetadataT(name=name, buffer=len(model.buffers) - 1))
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def flatbuffer_table():
    """flatbuffers' Table reader, or None where the package is not installed (a tflite-runtime-only install)."""
    try:
        from flatbuffers.table import Table
    except ImportError:
        return None
    return Table
