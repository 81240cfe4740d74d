"""Groups a split or fold keeps whole: file-number blocks, a groups file, embedding neighbours; grouped folds."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from allx.cli.main import app
from allx.errors import DataError, UsageError
from allx.layout import SplitKind
from allx.synthetic import make_image
from allx.train import groups as groups_module
from allx.train.embeddings import Embeddings, similar_pairs
from allx.train.folds import grouped_folds
from allx.train.groups import file_number, grouping_options, make_groups, sequence_blocks
from allx.train.split import SUBSETS, make_split, read_split

runner = CliRunner()
PER_CLASS = {"Benign": 12, "Early": 14, "Pre": 12, "Pro": 13}


@pytest.fixture(scope="module")
def numbered_dir(tmp_path_factory) -> Path:
    """Generated 32 px images named <class>/cell-<n>.jpg with n = 1..N (1, 2, ..., 10: not string order)."""
    root = tmp_path_factory.mktemp("numbered") / "data"
    rng = np.random.default_rng(3)
    for name, count in PER_CLASS.items():
        (root / name).mkdir(parents=True)
        for n in range(1, count + 1):
            Image.fromarray(make_image(name, 32, rng)).save(root / name / f"cell-{n}.jpg", quality=90)
    return root


def write_groups(path: Path, rows) -> Path:
    path.write_text("path,group\n" + "".join(f"{p},{g}\n" for p, g in rows))
    return path


def patient_rows(root: Path, per_patient: int = 2):
    """Every image with a patient ID: consecutive files of a class, `per_patient` at a time."""
    rows = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(class_dir.glob("*.jpg"), key=lambda p: file_number(p.name))
        rows += [(f"{class_dir.name}/{f.name}", f"{class_dir.name}-P{k // per_patient}") for k, f in enumerate(files)]
    return rows


def subset_of(split) -> dict[str, str]:
    return {p: s for s in SUBSETS for p in split.subset(s)}


def test_file_numbers_and_blocks_follow_numeric_order():
    assert file_number("Benign/WBC-Benign-012.jpg") == 12 and file_number("a/x-2-b.png") == 2
    assert file_number("a/plain.jpg") is None
    paths = [f"A/cell-{n}.jpg" for n in (10, 2, 1, 11, 3)] + ["B/cell-1.jpg"]
    blocks = sequence_blocks(paths, 2)
    assert blocks["A/cell-1.jpg"] == blocks["A/cell-2.jpg"] != blocks["A/cell-3.jpg"] == blocks["A/cell-10.jpg"]
    assert blocks["A/cell-11.jpg"] not in (blocks["A/cell-1.jpg"], blocks["A/cell-3.jpg"])
    assert blocks["B/cell-1.jpg"] != blocks["A/cell-1.jpg"], "blocks never cross classes"


@pytest.mark.parametrize("seed", [0, 5])
def test_sequence_blocks_never_straddle_subsets(numbered_dir, seed):
    split = make_split(numbered_dir, val=0.25, test=0.25, seed=seed, group_by="sequence", block_size=3)
    where = subset_of(split)
    for relpath, block in sequence_blocks(list(where), 3).items():
        mates = [p for p, b in sequence_blocks(list(where), 3).items() if b == block]
        assert {where[p] for p in mates} == {where[relpath]}, mates
    assert split.kind is SplitKind.SEQUENCE and split.meta["split_kind"] == "sequence"
    assert split.meta["grouping"]["block_size"] == 3
    assert all(split.counts()[s][c] > 0 for s in SUBSETS for c in PER_CLASS)


def test_patient_groups_from_a_file_never_straddle_subsets(numbered_dir, tmp_path):
    rows = patient_rows(numbered_dir)
    split = make_split(numbered_dir, seed=2, groups_file=write_groups(tmp_path / "g.csv", rows), group_by="groups")
    where = subset_of(split)
    by_patient = {}
    for path, patient in rows:
        by_patient.setdefault(patient, set()).add(where[path])
    assert all(len(s) == 1 for s in by_patient.values())
    assert split.meta["split_kind"] == "groups"


def test_split_json_records_the_kind_and_reads_back(numbered_dir, tmp_path):
    out = tmp_path / "s.json"
    outcome = runner.invoke(app, ["data", "split", str(numbered_dir), "--out", str(out), "--group-by", "sequence",
                                  "--block-size", "2", "--no-neighbours"])
    assert outcome.exit_code == 0, outcome.output
    assert json.loads(out.read_text())["meta"]["split_kind"] == SplitKind.SEQUENCE.value
    assert read_split(out, numbered_dir).kind is SplitKind.SEQUENCE
    assert "groups assigned whole" in outcome.stdout
    assert "no patient grouping" not in outcome.stderr  # a patient proxy was given: no warning


def test_embedding_neighbours_join_groups_within_a_class(numbered_dir, monkeypatch):
    """Two images whose embeddings point the same way are joined; a look-alike in another class is not."""
    twins = ("Early/cell-1.jpg", "Early/cell-9.jpg")
    other = "Pre/cell-4.jpg"

    def fake_embeddings(root, paths, progress=None):
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(len(paths), 64))
        for path in (*twins[1:], other):
            vectors[paths.index(path)] = vectors[paths.index(twins[0])]
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return Embeddings(tuple(paths), vectors.astype(np.float32))

    monkeypatch.setattr("allx.train.groups.image_embeddings", fake_embeddings)
    grouping = make_groups(numbered_dir, SplitKind.SEQUENCE, block_size=2, similarity=0.95)
    group_of = grouping.group_of()
    assert group_of[twins[0]] == group_of[twins[1]]
    assert group_of[other] != group_of[twins[0]]
    assert grouping.method["neighbours"]["pairs_joined"] == 1 and grouping.method["neighbours"]["threshold"] == 0.95


def test_similar_pairs_finds_pairs_at_or_above_the_threshold():
    vectors = np.eye(4, dtype=np.float32)
    vectors[3] = (vectors[0] + 0.1 * vectors[1]) / np.linalg.norm(vectors[0] + 0.1 * vectors[1])
    assert [(i, j) for i, j, _ in similar_pairs(vectors, 0.99)] == [(0, 3)]
    assert similar_pairs(vectors, 0.999) == []


def test_grouping_options_default_neighbours_on_only_for_patient_like_groupings(tmp_path):
    assert grouping_options(None, None, None, 0.95) == (SplitKind.NEAR_DUPLICATE, None)
    assert grouping_options("sequence", None, None, 0.95) == (SplitKind.SEQUENCE, 0.95)
    assert grouping_options(None, tmp_path / "g.csv", False, 0.95) == (SplitKind.GROUPS, None)
    with pytest.raises(UsageError, match="expected near-duplicate or sequence"):
        grouping_options("patients", None, None, 0.95)


# --- folds ------------------------------------------------------------------------------------------

def test_grouped_folds_test_every_image_once_and_keep_groups_whole(numbered_dir):
    grouping = make_groups(numbered_dir, SplitKind.SEQUENCE, block_size=2)
    folds = grouped_folds(grouping, k=4, seed=1, val=0.2)
    everything = sorted(p for g in grouping.groups for p in g)
    assert sorted(p for f in folds for p in f.test) == everything
    group_of = grouping.group_of()
    for fold in folds:
        where = subset_of(fold)
        assert sorted(where) == everything
        for path, subset in where.items():
            mates = [p for p in everything if group_of[p] == group_of[path]]
            assert {where[p] for p in mates} == {subset}
        assert all(fold.counts()["test"][c] > 0 for c in PER_CLASS), "stratified: every class in every test part"
        assert fold.kind is SplitKind.SEQUENCE and fold.val
    assert grouped_folds(grouping, k=4, seed=1, val=0.2)[2].test == folds[2].test, "same seed, same folds"


def test_folds_need_enough_groups(numbered_dir):
    grouping = make_groups(numbered_dir, SplitKind.SEQUENCE, block_size=5)  # 3 blocks per class
    with pytest.raises(DataError, match="at least 4 groups in every class"):
        grouped_folds(grouping, k=4)
    with pytest.raises(UsageError, match="expected a whole number from 2"):
        grouped_folds(grouping, k=1)


def test_an_unknown_grouping_kind_is_a_data_error(numbered_dir):
    with pytest.raises(UsageError, match="got grouping 'patients'"):
        make_split(numbered_dir, group_by="patients")


def test_make_split_reports_named_stages_and_convert_still_gets_done_total(numbered_dir):
    from allx.convert.source import read_or_make_split

    stages, calls = set(), []
    make_split(numbered_dir, progress=lambda stage, done, total: stages.add(stage))
    assert stages == {"hashing images"}
    split = read_or_make_split(None, numbered_dir, lambda done, total: calls.append((done, total)))
    assert split.train and calls[-1] == (calls[-1][1], calls[-1][1])
