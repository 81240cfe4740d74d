"""edge_runner.sample_batch: which fields belong to which sample, each sample's fields through one session, the CSV."""

import pytest
from test_edge_cli_sample import sample_folder, textured, write_model_folder

from allx.decision import FIELD_RECORD, SAMPLE_RECORD
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.sample_batch import CSV_HEADER, classify_samples, csv_rows, samples_from_arguments
from allx.errors import DataError, UsageError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return EdgeModel.load(write_model_folder(tmp_path_factory.mktemp("model")))


def test_one_sample_of_every_path_or_one_per_sub_folder(tmp_path):
    first = sample_folder(tmp_path / "smears" / "S2", good=2, blurred=0)
    sample_folder(tmp_path / "smears" / "S1", good=1, blurred=0)
    (tmp_path / "smears" / ".hidden").mkdir()
    by_folder = samples_from_arguments([str(tmp_path / "smears")], None, from_folders=True)
    assert list(by_folder) == ["S1", "S2"]  # sorted, hidden folders left out
    assert by_folder["S2"] == [(str(first / "good0.png"), None), (str(first / "good1.png"), None)]
    one = samples_from_arguments([str(first / "good1.png"), str(tmp_path / "missing.png")], "P-7", from_folders=False)
    assert list(one) == ["P-7"] and [path for path, _ in one["P-7"]] == [str(first / "good1.png"),
                                                                         str(tmp_path / "missing.png")]


@pytest.mark.parametrize("layout, sample_id, from_folders, error, fragment", [
    ("folders", "S1", True, UsageError, "expected one of them"),
    ("folders", "  ", False, UsageError, "empty --sample"),
    ("loose", None, True, DataError, "images directly in it"),
    ("file", None, True, DataError, "not a folder"),
    ("twice", None, True, DataError, "appears in two folders"),
])
def test_a_wrong_layout_is_one_error(tmp_path, layout, sample_id, from_folders, error, fragment):
    parents = [tmp_path / "a"]
    sample_folder(tmp_path / "a" / "S1", good=1, blurred=0)
    if layout == "loose":
        textured(9).save(tmp_path / "a" / "loose.png")
    if layout == "file":
        parents = [tmp_path / "a" / "S1" / "good0.png"]
    if layout == "twice":
        sample_folder(tmp_path / "b" / "S1", good=1, blurred=0)
        parents.append(tmp_path / "b")
    with pytest.raises(error, match=fragment):
        samples_from_arguments([str(p) for p in parents], sample_id, from_folders)


def test_every_field_and_sample_is_reported_counted_and_one_csv_row(model, tmp_path):
    one = sample_folder(tmp_path / "S1", good=3, blurred=1, broken=1)
    two = sample_folder(tmp_path / "S2", good=2, blurred=0, seed=20)
    samples = {"S1": samples_from_arguments([str(one)], "S1", False)["S1"],
               "S2": samples_from_arguments([str(two)], "S2", False)["S2"]}
    seen_fields, seen_samples = [], []
    fields, verdicts, summary = classify_samples(model, samples, lambda sample, field: seen_fields.append(sample),
                                                 seen_samples.append)
    assert seen_fields == ["S1"] * 5 + ["S2"] * 2 and [v.sample_id for v in seen_samples] == ["S1", "S2"]
    assert verdicts == seen_samples and (summary.samples, summary.fields, summary.failed) == (2, 7, 1)
    assert summary.used + summary.failed + summary.rejected_quality + summary.flagged_ood == summary.fields
    assert summary.rejected_quality >= 1  # the blurred field
    rows = csv_rows(fields, verdicts)
    assert all(len(row) == len(CSV_HEADER) for row in rows)
    assert [row[0] for row in rows] == [FIELD_RECORD] * 7 + [SAMPLE_RECORD] * 2
    broken = next(row for row in rows if row[2].endswith("broken0.jpg"))
    assert broken[1] == "S1" and broken[4] == "" and broken[9] == "false" and "broken0.jpg" in broken[10]
    assert [row[1] for row in rows[-2:]] == ["S1", "S2"] and rows[-2][6] == verdicts[0].verdict
