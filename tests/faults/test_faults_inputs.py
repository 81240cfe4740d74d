"""Inputs at the boundary: split.json spellings and sizes, symlinks out of DATA_DIR, bench.json numbers."""

import json
import os
import shutil

import pytest
from test_report import bench_json, run_report

from allx.errors import DataError
from allx.train.dataset import scan_dataset
from allx.train.split import read_split


@pytest.fixture
def data(synthetic_dir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(synthetic_dir, copy)
    return copy


def images_of(data, name):
    return sorted(p.relative_to(data).as_posix() for p in (data / name).glob("*.jpg"))


def write(tmp_path, document):
    path = tmp_path / "split.json"
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


@pytest.mark.parametrize("spelling", ["{c}/./{f}", "{c}//{f}", "./{c}/{f}"])
def test_other_spellings_of_a_path_are_caught_as_duplicates(data, tmp_path, spelling):
    benign, early = images_of(data, "Benign"), images_of(data, "Early")
    leaked = spelling.format(c="Benign", f=benign[0].split("/")[1])
    split = write(tmp_path, {"classes": ["Benign", "Early"], "train": benign[:4] + early[:4],
                             "test": [leaked, early[5]]})
    with pytest.raises(DataError, match="in both train and test"):
        read_split(split, data)


def test_paths_are_normalised_when_read(data, tmp_path):
    benign, early = images_of(data, "Benign"), images_of(data, "Early")
    split = write(tmp_path, {"classes": ["Benign", "Early"], "train": ["Benign//" + benign[0].split("/")[1],
                                                                        early[0]]})
    assert read_split(split, data).train == (benign[0], early[0])


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested 100000 levels deep"),
    ('{"classes": ["Benign"], "train": [], "meta": {"seed": ' + "7" * 5000 + "}}", "integer of 5000 digits"),
])
def test_hostile_split_json_is_a_data_error(data, tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_split(write(tmp_path, text), data)


def test_symlinked_class_folder_outside_data_dir_is_refused(data, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(data / images_of(data, "Benign")[0], outside / "secret.jpg")
    (data / "Leak").symlink_to(outside)
    with pytest.raises(DataError, match="'Leak' is a symbolic link leading outside DATA_DIR"):
        scan_dataset(data)


def test_symlinked_image_outside_data_dir_is_an_image_of_its_class(data, tmp_path):
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(data / images_of(data, "Benign")[0], outside)
    (data / "Benign" / "link.jpg").symlink_to(outside)
    dataset = scan_dataset(data)
    assert "Benign/link.jpg" in dataset.paths() and not dataset.unreadable
    split = write(tmp_path, {"classes": ["Benign"], "train": ["Benign/link.jpg"]})
    assert read_split(split, data).train == ("Benign/link.jpg",)


def test_a_data_set_made_of_links_is_read_and_bad_links_are_named(tmp_path):
    """A subset built as class folders of links to images elsewhere, as the usual loaders read it."""
    from allx.synthetic import make_dataset

    source = make_dataset(tmp_path / "source", per_class=2, size=16)
    subset = tmp_path / "subset"
    for image in sorted(source.rglob("*.jpg")):
        (subset / image.parent.name).mkdir(parents=True, exist_ok=True)
        (subset / image.parent.name / image.name).symlink_to(image)
    (subset / "Benign" / "gone.png").symlink_to(tmp_path / "deleted.png")
    os.mkfifo(tmp_path / "pipe.png")
    (subset / "Benign" / "pipe.png").symlink_to(tmp_path / "pipe.png")
    dataset = scan_dataset(subset)
    assert len(dataset.paths()) == len(list(source.rglob("*.jpg")))
    assert dict(dataset.unreadable) == {"Benign/gone.png": "a symbolic link to nothing (its target is missing)",
                                        "Benign/pipe.png": "not a regular file (a symbolic link's target)"}
    for image in source.rglob("*.jpg"):
        image.unlink()
    with pytest.raises(DataError, match=r"no readable images in \d class folder\(s\) \(skipped Benign/.*: a "
                                        r"symbolic link to nothing .* and \d+ more\)"):
        scan_dataset(subset)


def test_bench_json_with_negative_latencies_is_refused(tmp_path):
    path = bench_json(tmp_path / "bench.json", "Raspberry Pi 5", {"model_int8": [5.0, 6.0, 7.0]}, samples=True)
    document = json.loads(path.read_text())
    document["results"][0]["latency_ms"]["p50"] = -6.0
    path.write_text(json.dumps(document))
    result = run_report(tmp_path, path)
    assert result.exit_code == 2 and "expected a number >= 0" in result.output, result.output
    assert "Traceback" not in result.output


def test_bench_json_nested_too_deep_is_refused(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text('{"machine": {}, "results": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = run_report(tmp_path, path)
    assert result.exit_code == 2 and "levels deep" in result.output, result.output
