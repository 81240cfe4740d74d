"""`allx-edge` commands through Typer's CliRunner: outputs, exit codes, and one-line errors for bad input."""

import csv
import json
import shutil

import numpy as np
import pytest
from edge_models import LABELS, tiny_models
from PIL import Image
from test_images import png_header_only
from typer.testing import CliRunner

from allx.edge_runner.cli import app
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.runtime import EDGETPU_OP

runner = CliRunner()
GOOD = ("plain.png", "cmyk.jpg", "grey16.png", "rgba.png", "palette.png")
BAD = ("zero.jpg", "truncated.jpg", "notes.jpg", "huge.png")


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
    """Readable images in every awkward mode, plus broken files."""
    folder = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "plain.png")
    Image.fromarray(pixels).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65536, (30, 30))).astype(np.uint16)).save(folder / "grey16.png")
    Image.fromarray(np.dstack([pixels, np.full((40, 50), 128, np.uint8)]), "RGBA").save(folder / "rgba.png")
    Image.fromarray(pixels).convert("P").save(folder / "palette.png")
    (folder / "zero.jpg").write_bytes(b"")
    Image.fromarray(pixels).resize((200, 200)).save(folder / "full.jpg", quality=95)
    data = (folder / "full.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "full.jpg").unlink()
    (folder / "notes.jpg").write_text("a note, not a picture\n")
    (folder / "huge.png").write_bytes(png_header_only(8_000, 6_000))  # over allx's 40 Mpx limit
    return folder


def good_dir(source, tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(source / name, folder / name)
    return folder


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_help_documents_exit_codes():
    from allx.errors import EXIT_CODES

    top = invoke("--help")
    assert top.exit_code == 0
    words = " ".join(top.output.replace("│", " ").split())
    assert all(f"{code} {EXIT_CODES[code]}" in words for code in (0, 1, 2, 130))
    result = invoke("classify", "--help")
    assert result.exit_code == 0
    assert "0" in result.output and "1 some image failed" in result.output and "2 usage or model error" in result.output


def test_classify_json_lines_match_edge_model(tiny, mixed_dir, tmp_path):
    folder = good_dir(mixed_dir, tmp_path)
    result = invoke("classify", folder, "--model", tiny.int8, "--json", "--top-k", "2")
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(folder / n) for n in sorted(GOOD)]
    model = EdgeModel.load(tiny.int8)
    for record in records:
        # a lone .tflite without allx metadata: every record says which features are off, and which model ran
        assert set(record) == {"path", "label", "score", "top_k", "latency_ms", "decision", "subtype", "malignant_score",
                               "model_sha256", "features_off"}
        assert record["model_sha256"] == model.sha256 and record["features_off"] == ["ood", "quality", "operating_point"]
        probabilities = model.predict(model.load_pixels(record["path"]))
        assert record["label"] == LABELS[int(probabilities.argmax())]
        assert record["score"] == pytest.approx(float(probabilities.max()), abs=1e-6)
        assert [t["label"] for t in record["top_k"]][0] == record["label"] and len(record["top_k"]) == 2
    assert "5 classified, 0 failed" in result.stderr  # the summary stays off stdout in --json mode


def test_bad_images_never_stop_the_batch(tiny, mixed_dir, tmp_path):
    result = invoke("classify", mixed_dir, "--model", tiny.float32, "--json", "--csv", tmp_path / "out.csv")
    assert result.exit_code == 1
    records = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in result.stdout.splitlines()}
    assert set(records) == set(GOOD) | set(BAD)
    for name in BAD:
        assert set(records[name]) == {"path", "error", "model_sha256", "features_off"} and name in records[name]["error"]
    assert "too large" in records["huge.png"]["error"]
    for name in GOOD:
        assert records[name]["label"] in LABELS
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert len(rows) == 9 and sum(1 for row in rows if row["error"]) == 4


def test_table_and_summary(tiny, mixed_dir):
    result = invoke("classify", mixed_dir / "plain.png", mixed_dir / "zero.jpg", "-m", tiny.int8)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["path", "label", "confidence", "ms"]
    assert "plain.png" in lines[1] and "%" in lines[1]
    assert "zero.jpg" in lines[2] and "FAILED" in lines[2]
    assert "2 images: 1 classified, 1 failed" in lines[-1] and "images/s" in lines[-1]


def test_each_image_is_decided_once_for_its_record_and_its_words(tiny, mixed_dir, monkeypatch):
    from allx import decision
    from allx.edge_runner import sample, views

    calls, real = [], decision.decide
    counting = (lambda *args, **kwargs: calls.append(args[0]) or real(*args, **kwargs))
    for module in (decision, sample, views):  # wherever a copy of the name could be called from
        monkeypatch.setattr(module, "decide", counting, raising=False)
    result = invoke("classify", mixed_dir / "plain.png", mixed_dir / "rgba.png", mixed_dir / "zero.jpg",
                    "-m", tiny.int8, "--no-log")
    answers = [line for line in result.stdout.splitlines() if "B-ALL" in line]
    assert result.exit_code == 1 and len(answers) == 2 and len(calls) == 2


def test_globs_and_recursive_folders(tiny, mixed_dir, tmp_path):
    nested = tmp_path / "top" / "sub"
    nested.mkdir(parents=True)
    shutil.copy(mixed_dir / "plain.png", tmp_path / "top" / "a.png")
    shutil.copy(mixed_dir / "rgba.png", nested / "b.png")
    (nested / "readme.txt").write_text("not an image")
    flat = invoke("classify", tmp_path / "top", "-m", tiny.int8, "--json")
    assert flat.exit_code == 0 and len(flat.stdout.splitlines()) == 1
    deep = invoke("classify", tmp_path / "top", "-m", tiny.int8, "--json", "--recursive")
    assert deep.exit_code == 0 and len(deep.stdout.splitlines()) == 2
    globbed = invoke("classify", f"{tmp_path}/top/**/*", "-m", tiny.int8, "--json", "-r")
    assert globbed.exit_code == 0 and len(globbed.stdout.splitlines()) == 2  # readme.txt skipped
    nothing = invoke("classify", f"{tmp_path}/*.webp", "-m", tiny.int8, "--json")
    assert nothing.exit_code == 1 and "no files match" in json.loads(nothing.stdout)["error"]


def test_missing_labels_is_a_usage_error(tiny, mixed_dir, tmp_path):
    shutil.copy(tiny.int8, tmp_path / "bare.tflite")
    result = invoke("classify", mixed_dir / "plain.png", "-m", tmp_path / "bare.tflite")
    assert result.exit_code == 2 and "no labels" in result.stderr
    labelled = invoke("classify", mixed_dir / "plain.png", "-m", tmp_path / "bare.tflite", "--labels", tiny.labels_file)
    assert labelled.exit_code == 0


def bad_model(kind, tiny, tmp_path):
    path = tmp_path / f"{kind}.tflite"
    if kind == "truncated":
        path.write_bytes(tiny.int8.read_bytes()[:1000])
    elif kind == "not-tflite":
        Image.new("RGB", (4, 4)).save(path, format="PNG")
    elif kind == "vector-input":
        shutil.copy(tiny.vector, path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("missing", "no such model file"), ("truncated", "interpreter refused the model"),
    ("not-tflite", "not a TFLite model"), ("vector-input", "not an image tensor"),
])
def test_bad_model_is_one_line_exit_2(tiny, mixed_dir, tmp_path, kind, message):
    path = bad_model(kind, tiny, tmp_path)
    for args in (["classify", mixed_dir / "plain.png", "-m", path], ["bench", "-m", path, "--runs", "2"]):
        result = invoke(*args)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr, result.stderr
        assert result.stdout == ""


def test_unknown_delegate_and_missing_edgetpu(tiny, mixed_dir, tmp_path):
    result = invoke("classify", mixed_dir / "plain.png", "-m", tiny.int8, "--delegate", "npu")
    assert result.exit_code == 2 and "unknown delegate 'npu', expected one of auto, cpu, edgetpu" in result.stderr
    compiled = tmp_path / "m_edgetpu.tflite"
    compiled.write_bytes(tiny.int8.read_bytes() + EDGETPU_OP)
    for args in (["-m", tiny.int8, "--delegate", "edgetpu"], ["-m", compiled]):
        result = invoke("classify", mixed_dir / "plain.png", *args)
        if "could not be loaded" not in result.stderr:
            pytest.skip("an Edge TPU runtime is installed here")
        assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "apt-get install" in result.stderr


def test_top_k_must_be_positive(tiny, mixed_dir):
    result = invoke("classify", mixed_dir / "plain.png", "-m", tiny.int8, "--top-k", "0")
    assert result.exit_code == 2 and "expected a number >= 1" in result.stderr


def test_ood_keys_appear_when_the_manifest_has_ood(tiny, mixed_dir, tmp_path):
    folder = tmp_path / "conv"
    folder.mkdir()
    shutil.copy(tiny.int8, folder / "model_int8.tflite")
    (folder / "model.json").write_text(json.dumps({
        "model_file": "model_int8.tflite", "labels": list(LABELS), "ood": {"method": "max_softmax", "threshold": 0.0}}))
    result = invoke("classify", mixed_dir / "plain.png", "-m", folder, "--json")
    record = json.loads(result.stdout)
    assert record["ood"] is True and 0 < record["ood_score"] < 1  # threshold 0 flags everything
    table = invoke("classify", mixed_dir / "plain.png", "-m", folder)
    assert "uncertain: unlike training images" in table.stdout and "1 flagged" in table.stdout


def test_info_describes_tensors_ops_and_manifest(tiny, tmp_path):
    result = invoke("info", tiny.int8)
    assert result.exit_code == 0
    assert "uint8  scale 1, zero point 0" in result.stdout and "CONV_2D x2" in result.stdout
    assert "ai-edge-litert" in result.stdout and "Benign, Early, Pre, Pro" in result.stdout
    folder = tmp_path / "conv"
    folder.mkdir()
    shutil.copy(tiny.int8, folder / "model_int8.tflite")
    (folder / "model.json").write_text(json.dumps({
        "model_file": "model_int8.tflite", "labels": list(LABELS), "precision": "int8",
        "check": {"passed": True, "agreement": 0.99}}))
    described = json.loads(invoke("info", folder, "--json").stdout)
    assert described["manifest"]["precision"] == "int8" and described["check"]["passed"] is True
    assert described["inputs"][0]["shape"] == [1, 32, 32, 3] and described["op_counts"]["CONV_2D"] == 2
    vector = invoke("info", tiny.vector)  # info describes any .tflite, even one classify refuses
    assert vector.exit_code == 0 and "[1, 10]" in vector.stdout


def test_bench_two_models_side_by_side(tiny, mixed_dir, tmp_path):
    result = invoke("bench", "-m", tiny.float32, "-m", tiny.int8, "--runs", "5", "--warmup", "1",
                    "--images", mixed_dir, "--json", tmp_path / "b.json", "--markdown", tmp_path / "b.md", "-t", "1")
    assert result.exit_code == 0
    report = json.loads((tmp_path / "b.json").read_text())
    first, second = report["results"]
    assert first["speed_ratio"] == 1.0
    assert second["speed_ratio"] == pytest.approx(first["latency_ms"]["mean"] / second["latency_ms"]["mean"])
    stats = second["latency_ms"]
    assert stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert second["precision"] == "int8" and second["threads"] == 1 and second["runs"] == 5
    assert second["end_to_end"]["images"] == 5 and second["end_to_end"]["failures"] >= 1
    assert report["machine"]["cores"] >= 1 and report["machine"]["python"]
    markdown = (tmp_path / "b.md").read_text()
    assert "| tiny_int8.tflite | int8 |" in markdown and "Machine:" in markdown
    assert "tiny_float32.tflite" in result.stdout and "speed vs first" in result.stdout


def test_bench_bad_options(tiny, tmp_path):
    assert "expected runs >= 1" in invoke("bench", "-m", tiny.int8, "--runs", "0").stderr
    result = invoke("bench", "-m", tiny.int8, "--images", tmp_path / "absent")
    assert result.exit_code == 2 and "no such folder" in result.stderr


def test_control_characters_in_names_and_sample_ids_are_escaped(tiny, mixed_dir, tmp_path):
    """A file name or --sample with ANSI escapes and newlines cannot colour the table or fake a result line."""
    folder = tmp_path / "spoof"
    folder.mkdir()
    name = "a\x1b[2K\rb\nfake.png  Benign  99.9%\n.png"
    shutil.copy(mixed_dir / "plain.png", folder / name)
    (folder / "broken\x1b[31m.png").write_bytes(b"")
    table = invoke("classify", folder, "--model", tiny.int8, "--labels", tiny.labels_file)
    sample = invoke("classify", folder / name, "--model", tiny.int8, "--labels", tiny.labels_file,
                    "--sample", "S-1\nsample S-2: no B-ALL seen", "--no-log")
    for result, rows in ((table, 3), (sample, 3)):  # header, a row per image, (the verdict,) the summary
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        assert "\x1b" not in result.output and "\r" not in result.output, result.output
        assert len(lines) == rows + 1, lines
    assert "a\\x1b[2K\\rb\\nfake.png" in table.stdout and "broken\\x1b[31m.png" in table.stdout
    assert "sample S-1\\nsample S-2: no B-ALL seen" in sample.stdout



def test_the_log_commands_print_through_the_same_escape(tiny, mixed_dir, tmp_path):
    """A sample ID logged by classify and named again by `review` is shown escaped there too."""
    sample, db = "S-1\x1b[31m", tmp_path / "log.db"
    logged = invoke("classify", mixed_dir / "plain.png", "--model", tiny.int8, "--labels", tiny.labels_file,
                    "--sample", sample, "--log-db", db, "--operator", "ana")
    assert logged.exit_code in (0, 1), logged.output
    review = invoke("review", sample, "--confirm", "--operator", "ben", "--log-db", db)
    assert review.exit_code == 0, review.output
    assert "sample S-1\\x1b[31m: confirmed" in review.stdout and "\x1b" not in review.output


def test_classify_and_camera_take_the_shared_options():
    """RunOptions is declared once and both commands offer each of its fields, gathered into one `options`."""
    import dataclasses

    import typer

    from allx.edge_runner.cli import RunOptions, with_run_options

    commands = typer.main.get_command(app).commands
    shared = {field.name for field in dataclasses.fields(RunOptions)}
    for name in ("classify", "camera"):
        assert shared <= {param.name for param in commands[name].params}, name

    @with_run_options
    def command(path: str, *, options: RunOptions):
        return path, options

    assert command("x", threads=3, no_log=True) == ("x", RunOptions(threads=3, no_log=True))
