"""`allx-edge calibrate`: a site's images re-threshold the out-of-distribution flag into a new model folder,
labels give the site's accuracy beside the converter's, and every bad input is one line with exit 2."""

import csv
import hashlib
import json
import shutil

import numpy as np
import pytest
from edge_models import LABELS, tiny_models
from PIL import Image
from typer.testing import CliRunner

from allx import layout
from allx.convert.ood import embeddings_of
from allx.convert.ood_stats import fit_mahalanobis, stats_bytes
from allx.decision import sensitivity_specificity
from allx.edge_runner.calibrate import calibrate_site
from allx.edge_runner.cli import app
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.ood import mahalanobis_scores, threshold_for

runner = CliRunner()
CONVERTER = {"accuracy": 0.9, "malignant_sensitivity": 0.95, "benign_specificity": 0.8}


def smears(rng, count, cast=(0, 0, 0)):
    """Pink background with a darker 'cell'; `cast` shifts the colours as another camera would."""
    images = np.clip(rng.normal(np.add((230, 190, 210), cast), 12, (count, 32, 32, 3)), 0, 255)
    for image in images:
        top, left = rng.integers(4, 20, 2)
        image[top:top + 8, left:left + 8] = rng.normal(np.add((110, 60, 150), cast), 10, 3)
    return images.astype(np.uint8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A folder like `allx convert --ood` writes, calibrated on 'lab' smears at a 5 % flag rate."""
    folder = tmp_path_factory.mktemp("model")
    shutil.copy(tiny_models().two_outputs, folder / "model.tflite")
    bare = EdgeModel.load(folder / "model.tflite", labels=list(LABELS))
    embedding = next(o["name"] for o in bare.interpreter.get_output_details() if o["name"] != bare.output["name"])
    manifest = {"format": "allx-tflite/1", "model_file": "model.tflite", "labels": list(LABELS),
                "outputs": {"probabilities": {"name": bare.output["name"]}, "embedding": {"name": embedding}},
                "check": {"subset": "test", "images": 200, "quantized": CONVERTER}}
    (folder / layout.MANIFEST).write_text(json.dumps(manifest))
    (folder / layout.LABELS).write_text("\n".join(LABELS) + "\n")
    pixels = smears(np.random.default_rng(5), 80)
    embeddings = embeddings_of(EdgeModel.load(folder), pixels)
    stats = fit_mahalanobis(embeddings[::2], np.repeat(np.arange(4), 10), components=6)
    (folder / "ood_stats_float32.npz").write_bytes(stats_bytes(stats))
    manifest["ood"] = {"method": "mahalanobis", "stats_file": "ood_stats_float32.npz", "flag_rate": 0.05,
                       "threshold": threshold_for(mahalanobis_scores(embeddings[1::2], stats), 0.05)}
    (folder / layout.MANIFEST).write_text(json.dumps(manifest))
    return folder


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory):
    """60 smears from a 'site camera' with a colour cast, half of them in a sub-folder."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "monday").mkdir()
    for index, pixels in enumerate(smears(np.random.default_rng(9), 60, cast=(-40, 25, -30))):
        Image.fromarray(pixels).save(folder / ("monday" if index % 2 else ".") / f"site{index:02}.png")
    return folder


def folder_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def invoke(*args):
    result = runner.invoke(app, ["calibrate", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def flagged_share(model, folder):
    flags = [model.classify(model.load_pixels(path)).ood for path in sorted(folder.rglob("*.png"))]
    return np.mean(flags)


def test_calibration_moves_the_threshold_into_a_new_folder(model_dir, site_dir, tmp_path):
    before = folder_digest(model_dir)
    out = tmp_path / "site_model"
    refused = invoke("--model", model_dir, "--images", site_dir, "--out", out)
    assert refused.exit_code == 3 and not out.exists()  # the shipped flag marked them all: labels or --force
    assert "flagged 100% of the site's images: expected --labels-csv" in refused.stderr
    result = invoke("--model", model_dir, "--images", site_dir, "--out", out, "--force")
    assert result.exit_code == 0, result.output
    assert folder_digest(model_dir) == before  # the original is never touched
    assert {p.name for p in out.iterdir()} == {"model.tflite", "ood_stats_float32.npz", layout.LABELS,
                                               layout.MANIFEST, layout.SITE_CALIBRATION}
    manifest = json.loads((out / layout.MANIFEST).read_text())
    # The new .tflite carries the site's manifest and statistics, so a lone copy of it keeps the site's thresholds.
    from allx.edge_runner.metadata import read_embedded

    embedded = read_embedded((out / "model.tflite").read_bytes(), out)
    assert embedded.manifest == manifest and set(embedded.files) == {"ood_stats_float32.npz"}
    record = json.loads((out / layout.SITE_CALIBRATION).read_text())
    assert record["kind"] == "site-calibration" and record["images"] == 60
    assert manifest["ood"]["threshold"] == record["ood"]["threshold"] > record["ood"]["threshold_before"]
    assert manifest["site_calibration"]["source_model_sha256"] == before["model.tflite"]
    assert flagged_share(EdgeModel.load(model_dir), site_dir) > 0.5  # the converted threshold flags the site
    assert flagged_share(EdgeModel.load(out), site_dir) <= 0.05  # the site's threshold flags its share
    assert "out-of-distribution threshold:" in result.stdout and "warning: the site's images differ" in result.stdout
    assert "note: image-quality check off: model.json has no quality statistics" in result.stdout


def test_quality_limits_follow_the_site_camera(model_dir, site_dir, tmp_path):
    from allx.edge_runner.quality import calibrate_limits, check_quality, measure

    with_quality = tmp_path / "with_quality"
    shutil.copytree(model_dir, with_quality)
    manifest = json.loads((with_quality / layout.MANIFEST).read_text())
    lab = calibrate_limits([measure(pixels) for pixels in smears(np.random.default_rng(5), 40)])
    manifest["quality"] = {**lab.to_dict(), "calibrated_on": "train"}
    (with_quality / layout.MANIFEST).write_text(json.dumps(manifest))
    out = tmp_path / "out"
    result = invoke("--model", with_quality, "--images", site_dir, "--out", out, "--json", "--force")
    assert result.exit_code == 0, result.output
    quality = json.loads(result.stdout)["quality"]
    assert quality["rejected_before"] > 0.5 and quality["rejected_after"] <= 0.05  # the cast failed the lab's colour
    written = json.loads((out / layout.MANIFEST).read_text())["quality"]
    assert written["calibrated_on"] == "site" and written["colour_mean"] == quality["limits"]["colour_mean"]
    site = EdgeModel.load(out)
    limits = site.manifest.quality
    pixels = site.load_pixels(next(site_dir.glob("*.png")))
    assert check_quality(pixels, limits).ok and not check_quality(pixels, lab).ok
    assert "image-quality limits: focus >=" in result.stderr


def write_labels(path, site_dir, model_dir, header=("path", "label")):
    """Labels = the model's own top-1 for 3/4 of the images, a wrong one for the rest; one image unlabelled."""
    model = EdgeModel.load(model_dir)
    rows, truth, probabilities = [], [], []
    for index, image in enumerate(sorted(site_dir.rglob("*.png"))[1:]):
        probs = model.predict(model.load_pixels(image))
        label = int(probs.argmax()) if index % 4 else (int(probs.argmax()) + 1) % 4
        rows.append((image.relative_to(site_dir).as_posix(), LABELS[label]))
        truth.append(label)
        probabilities.append(probs)
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows([header, *rows])
    return np.array(truth), np.stack(probabilities)


def test_labels_report_the_site_accuracy_beside_the_converter(model_dir, site_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    truth, probabilities = write_labels(labels, site_dir, model_dir)
    result = invoke("--model", model_dir, "--images", site_dir, "--out", tmp_path / "out", "--labels-csv", labels,
                    "--json", "--max-drop", "0.2")
    assert result.exit_code == 0, result.output
    accuracy = json.loads(result.stdout)["accuracy"]
    expected = sensitivity_specificity(probabilities, truth, LABELS)
    assert accuracy["images"] == 59 and accuracy["unlabelled"] == 1 and accuracy["missing"] == []
    assert accuracy["accuracy"] == pytest.approx(np.mean(probabilities.argmax(axis=1) == truth))
    assert accuracy["malignant_sensitivity"] == pytest.approx(expected["malignant_sensitivity"])
    assert accuracy["benign_specificity"] == pytest.approx(expected["benign_specificity"])
    assert accuracy["converter"]["accuracy"] == 0.9 and accuracy["decision_threshold"] == 0.5
    assert "site accuracy on 59 labelled images (converter on 200 test images" in result.stderr
    assert "(converter 0.900)" in result.stderr and (tmp_path / "out" / layout.MANIFEST).is_file()


def test_a_site_below_the_converter_fails_the_acceptance_and_writes_nothing(model_dir, site_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    write_labels(labels, site_dir, model_dir)  # site accuracy 0.75 against the converter's 0.90
    result = invoke("--model", model_dir, "--images", site_dir, "--out", tmp_path / "out", "--labels-csv", labels)
    assert result.exit_code == 3 and not (tmp_path / "out").exists()
    assert "-> not written (acceptance failed)" in result.stdout and "site accuracy on 59 labelled" in result.stdout
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: site acceptance failed: accuracy 0.746 < converter's 0.900 - 0.05")


def test_one_labelled_image_cannot_pass_the_acceptance(model_dir, site_dir, tmp_path):
    labels = tmp_path / "labels.csv"
    write_labels(labels, site_dir, model_dir)
    header, _, right = labels.read_text().splitlines()[:3]  # one image, labelled as the model says: 100%
    labels.write_text(f"{header}\n{right}\n")
    result = invoke("--model", model_dir, "--images", site_dir, "--out", tmp_path / "out", "--labels-csv", labels,
                    "--max-drop", "0.2")
    assert result.exit_code == 3 and not (tmp_path / "out").exists(), result.output
    assert "accuracy measured on 1 labelled image(s), expected at least 20" in result.stderr


def test_a_rejected_model_is_not_calibrated(model_dir, site_dir, tmp_path):
    rejected = tmp_path / "rejected"
    shutil.copytree(model_dir, rejected)
    manifest = json.loads((rejected / layout.MANIFEST).read_text())
    (rejected / layout.MANIFEST).write_text(json.dumps({**manifest, "status": "rejected"}))
    result = invoke("--model", rejected, "--images", site_dir, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "status rejected" in result.stderr and not (tmp_path / "out").exists()


def test_a_model_without_the_flag_calibrates_only_with_labels(model_dir, site_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    manifest = json.loads((bare / layout.MANIFEST).read_text())
    del manifest["ood"], manifest["outputs"]["embedding"]
    (bare / layout.MANIFEST).write_text(json.dumps(manifest))
    nothing = invoke("--model", bare, "--images", site_dir, "--out", tmp_path / "a")
    assert nothing.exit_code == 2 and nothing.stderr.count("\n") == 1
    assert "nothing to calibrate: out-of-distribution flag: off" in nothing.stderr
    assert "allx convert --ood" in nothing.stderr and not (tmp_path / "a").exists()
    labels = tmp_path / "labels.csv"
    write_labels(labels, site_dir, model_dir, header=("file", "label"))
    (labels).write_text(labels.read_text().replace("monday/", ""))
    result = invoke("--model", bare, "--images", site_dir, "--out", tmp_path / "b", "--labels-csv", labels,
                    "--max-drop", "0.2")
    assert result.exit_code == 0 and "note: out-of-distribution flag: off" in result.stdout
    assert "site accuracy on 59 labelled images" in result.stdout


def test_library_call_returns_the_record(model_dir, site_dir, tmp_path):
    calibration = calibrate_site(model_dir, site_dir, tmp_path / "lib", flag_rate=0.1, force=True)
    assert calibration.ood["flag_rate"] == 0.1 and calibration.ood["flagged_after"] <= 0.1
    assert calibration.to_dict()["kind"] == "site-calibration" and calibration.accuracy is None
