"""One file is the whole model: the manifest and OOD statistics embedded in the .tflite, read by allx-edge alone."""

import csv
import json
import shutil

import numpy as np
import pytest
from edge_models import LABELS, tiny_models
from PIL import Image
from test_edge_startup import blocker_dir, run_cli
from typer.testing import CliRunner

from allx.edge_runner.metadata import embed_entries, embed_metadata, metadata_tools
from allx.convert.ood_stats import fit_mahalanobis, stats_bytes
from allx.edge_runner import metadata
from allx.edge_runner.cli import app
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.ood import mahalanobis_scores
from allx.errors import MissingDependency, ModelError

runner = CliRunner()
STATS = "ood_stats_int8.npz"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A folder like `allx convert` writes (model.json, labels.txt, ood stats) around a model carrying them too."""
    folder = tmp_path_factory.mktemp("converted")
    plain = tiny_models().two_outputs.read_bytes()
    bare = EdgeModel.load(tiny_models().two_outputs, labels=list(LABELS))
    outputs = bare.interpreter.get_output_details()
    embedding = next(o for o in outputs if o["name"] != bare.output["name"])
    manifest = {"format": "allx-tflite/1", "kind": "manifest", "model_file": "model_int8.tflite", "status": "passed",
                "labels": list(LABELS), "outputs": {"probabilities": {"name": bare.output["name"]},
                                                    "embedding": {"name": embedding["name"]}},
                "quality": {"focus_min": 40.0}, "operating_point": {"threshold": 0.5}}
    (folder / "model_int8.tflite").write_bytes(plain)
    (folder / "model.json").write_text(json.dumps(manifest))
    model = EdgeModel.load(folder)
    embeddings = np.stack([model.predict_with_embedding(p)[1] for p in smear_pixels(40)])  # smear-like images
    stats = fit_mahalanobis(embeddings, np.repeat(np.arange(4), 10), components=4)
    manifest["ood"] = {"method": "mahalanobis", "threshold": float(mahalanobis_scores(embeddings, stats).max()) * 2,
                       "stats_file": STATS}
    (folder / "model_int8.tflite").write_bytes(embed_metadata(plain, manifest, {STATS: stats_bytes(stats)}))
    (folder / "model.json").write_text(json.dumps(manifest, indent=2))
    (folder / STATS).write_bytes(stats_bytes(stats))
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return folder, manifest, plain


def smear_pixels(count: int, seed: int = 3) -> np.ndarray:
    """Pink background with a darker 'cell': what the statistics are fitted on."""
    rng = np.random.default_rng(seed)
    images = np.clip(rng.normal((230, 190, 210), 12, (count, 32, 32, 3)), 0, 255)
    images[:, 12:20, 12:20] = (110, 60, 150)
    return images.astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    Image.fromarray(smear_pixels(1, seed=8)[0]).save(folder / "a_smear.png")
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "b_noise.png")
    return folder


def lone_copy(converted, tmp_path, name="copied.tflite"):
    """The .tflite alone in a new folder, renamed, as a technician might copy it."""
    folder, _, _ = converted
    (tmp_path / "pi").mkdir()
    return shutil.copy(folder / "model_int8.tflite", tmp_path / "pi" / name)


def classify(*args):
    result = runner.invoke(app, ["classify", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def test_the_model_carries_its_manifest_and_statistics(converted):
    folder, manifest, plain = converted
    data = (folder / "model_int8.tflite").read_bytes()
    embedded = metadata.read_embedded(data, folder / "model_int8.tflite")
    assert embedded.manifest == manifest and embedded.files == {STATS: (folder / STATS).read_bytes()}
    assert metadata.read_embedded(plain, folder / "plain.tflite") is None
    # The converter's own entries survive, next to allx's.
    names = set(metadata.allx_entries(data, folder)) | {"min_runtime_version"}
    assert names >= {metadata.MANIFEST_ENTRY, metadata.FILE_PREFIX + STATS}
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    assert b"min_runtime_version" in {model.Metadata(i).Name() for i in range(model.MetadataLength())}
    # The few schema fields read by hand give what ai-edge-litert's generated schema reader gives.
    entries = [model.Metadata(i) for i in range(model.MetadataLength())]
    assert metadata.allx_entries(data, folder) == {
        entry.Name().decode(): model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
        for entry in entries if entry.Name().startswith(b"allx.")}


def test_embedding_leaves_the_outputs_unchanged(converted, tmp_path):
    folder, _, plain = converted
    (tmp_path / "plain.tflite").write_bytes(plain)
    pixels = np.random.default_rng(5).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    before = EdgeModel.load(tmp_path / "plain.tflite", labels=list(LABELS)).predict(pixels)
    np.testing.assert_array_equal(EdgeModel.load(folder / "model_int8.tflite").predict(pixels), before)


def test_a_lone_copy_classifies_with_labels_and_the_ood_flag(converted, images, tmp_path):
    folder, _, _ = converted
    model_path = lone_copy(converted, tmp_path)
    result = classify(images, "--model", model_path, "--json", "--csv", tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    from_folder = [json.loads(line) for line in classify(images, "--model", folder, "--json").stdout.splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("path", "latency_ms")}  # noqa: E731
    assert [strip(r) for r in records] == [strip(r) for r in from_folder]
    assert all(r["label"] in LABELS and isinstance(r["ood"], bool) for r in records)
    assert [r["ood"] for r in records] == [False, True]  # the noise image is flagged from the embedded statistics
    sha = EdgeModel.load(model_path).sha256
    assert {r["model_sha256"] for r in records} == {sha} and "features_off" not in records[0]
    assert "warning" not in result.stderr
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert {row["model_sha256"] for row in rows} == {sha} and rows[1]["ood"] == "true"


def test_info_and_bench_work_with_the_file_alone(converted, tmp_path):
    model_path = lone_copy(converted, tmp_path)
    result = runner.invoke(app, ["info", str(model_path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["metadata"] == "embedded" and document["labels"] == list(LABELS)
    assert len(document["sha256"]) == 64 and document["features_off"] == [] and document["warnings"] == []
    text = runner.invoke(app, ["info", str(model_path)]).stdout
    assert "metadata  embedded in the .tflite" in text and f"sha256    {document['sha256']}" in text
    bench = runner.invoke(app, ["bench", "--model", str(model_path), "--runs", "2", "--warmup", "0",
                                "--json", str(tmp_path / "bench.json")])
    assert bench.exit_code == 0, bench.output
    result_json = json.loads((tmp_path / "bench.json").read_text())["results"][0]
    assert result_json["model_sha256"] == document["sha256"] and result_json["features_off"] == []


def test_embedded_copy_wins_over_a_mismatched_folder_and_says_so(converted, images, tmp_path):
    folder, manifest, _ = converted
    shutil.copytree(folder, tmp_path / "mixed")
    wrong = {**manifest, "labels": list(reversed(LABELS))}  # model.json of another model pasted into the folder
    (tmp_path / "mixed" / "model.json").write_text(json.dumps(wrong))
    result = classify(images, "--model", tmp_path / "mixed", "--json")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: model.json disagrees with the metadata embedded in model_int8.tflite: "
                        "using the embedded copy (it travels with the model)"]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["metadata_overrode"] == ["model.json"] for r in records)
    model = EdgeModel.load(tmp_path / "mixed")
    assert model.labels == LABELS and model.card.overridden == ("model.json",)


def test_embedded_labels_win_over_labels_txt_and_the_labels_option(converted, images, tmp_path):
    model_path = lone_copy(converted, tmp_path)
    (model_path.parent / "labels.txt").write_text("\n".join(reversed(LABELS)) + "\n")
    model = EdgeModel.load(model_path)
    assert model.labels == LABELS and model.card.overridden == ("labels.txt",)
    (tmp_path / "other.txt").write_text("a\nb\nc\nd\n")
    result = classify(images, "--model", model_path, "--labels", tmp_path / "other.txt", "--json")
    assert result.exit_code == 0
    assert {json.loads(line)["label"] for line in result.stdout.splitlines()} <= set(LABELS)
    assert "warning: --labels disagrees with the metadata embedded in copied.tflite" in result.stderr


def test_a_model_without_statistics_says_which_features_are_off_once(converted, images, tmp_path):
    _, manifest, plain = converted
    bare = {key: value for key, value in manifest.items() if key not in ("ood", "quality")}
    bare["ood_note"] = "the model has no nested 'head'"
    (tmp_path / "m.tflite").write_bytes(embed_metadata(plain, bare, {}))
    result = classify(images, "--model", tmp_path / "m.tflite", "--json")
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: running without: out-of-distribution flag, image-quality check (no statistics for "
                        "them in the model's embedded metadata; out-of-distribution flag: the model has no nested 'head')"]
    assert all(json.loads(line)["features_off"] == ["ood", "quality"] for line in result.stdout.splitlines())


@pytest.mark.parametrize(("entries", "message"), [
    ({metadata.MANIFEST_ENTRY: b"{\"format\": \"allx-tflite/1\", \"lab"}, "corrupt embedded metadata (the manifest: not valid JSON (line 1:"),
    ({metadata.MANIFEST_ENTRY: b"\xff\xfe"}, "corrupt embedded metadata (not UTF-8)"),
    ({metadata.MANIFEST_ENTRY: b"[1, 2]"}, "corrupt embedded metadata (a JSON list)"),
    ({metadata.MANIFEST_ENTRY: json.dumps({"format": "allx-tflite/2", "labels": list(LABELS)}).encode()},
     "embedded metadata is allx-tflite/2, newer than this allx-edge reads (allx-tflite/1): upgrade allx"),
    ({metadata.MANIFEST_ENTRY: json.dumps({"format": "allx-tflite/1", "labels": list(LABELS), "ood": {
        "method": "mahalanobis", "threshold": 1.0, "stats_file": STATS}}).encode()},
     f"embedded metadata names {STATS} but the model carries no such file"),
    ({metadata.MANIFEST_ENTRY: json.dumps({"format": "allx-tflite/1", "note": "[" * metadata.MAX_MANIFEST_BYTES})
      .encode()}, f"bytes, expected at most {metadata.MAX_MANIFEST_BYTES:,}"),
])
def test_bad_embedded_metadata_is_one_line_and_exit_2(converted, images, tmp_path, entries, message):
    _, _, plain = converted
    (tmp_path / "bad.tflite").write_bytes(embed_entries(plain, entries))
    for command in (["classify", str(images), "--model"], ["info"], ["bench", "--runs", "1", "--model"]):
        result = runner.invoke(app, [*command, str(tmp_path / "bad.tflite")])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1


def test_corrupt_embedded_statistics_are_one_line(converted, images, tmp_path):
    _, manifest, plain = converted
    (tmp_path / "bad.tflite").write_bytes(embed_metadata(plain, manifest, {STATS: b"PK\x03\x04 not a zip"}))
    result = classify(images, "--model", tmp_path / "bad.tflite")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"{STATS} (embedded in the model): unreadable statistics file" in result.stderr


def test_a_damaged_metadata_table_is_one_line(converted, tmp_path):
    folder, _, _ = converted
    data = bytearray((folder / "model_int8.tflite").read_bytes())
    name = metadata.MANIFEST_ENTRY.encode()
    at = bytes(data).index(name)
    data[at - 4:at] = (10 ** 9).to_bytes(4, "little")  # the entry name's length now runs far past the file
    (tmp_path / "damaged.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt metadata in the model flatbuffer"):
        metadata.read_embedded(bytes(data), tmp_path / "damaged.tflite")


def test_without_the_flatbuffer_reader_a_model_with_metadata_is_refused(converted, monkeypatch):
    folder, _, plain = converted
    monkeypatch.setattr(metadata, "flatbuffer_table", lambda: None)
    with pytest.raises(MissingDependency, match="carries allx metadata but this install cannot read it"):
        EdgeModel.load(folder / "model_int8.tflite")
    assert metadata.read_embedded(plain, folder / "plain.tflite") is None  # nothing to read: nothing refused


def test_convert_without_the_flatbuffer_utilities_is_one_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ai_edge_litert.tools", None)  # as if this ai-edge-litert shipped no tools
    with pytest.raises(MissingDependency, match="cannot embed the manifest in the .tflite"):
        metadata_tools()


def test_reads_the_embedded_metadata_where_tensorflow_cannot_be_imported(converted, images, tmp_path):
    model_path = lone_copy(converted, tmp_path)
    result = run_cli(["classify", images / "b_noise.png", "--model", model_path, "--json"],
                     blocker_dir(tmp_path, "tensorflow", "keras"))
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["label"] in LABELS and record["ood"] is True
