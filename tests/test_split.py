"""Group-aware stratified splits, and SPLIT.json writing, reading and checking."""

import json
import math
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance

from allx.errors import DataError
from allx.train.split import SUBSETS, Split, make_split, read_split, target_counts, write_split

from messy_data import CONFLICT, EXACT, NEAR, make_messy_copy


@pytest.fixture(scope="module")
def messy_dir(synthetic_dir, tmp_path_factory) -> Path:
    return make_messy_copy(synthetic_dir, tmp_path_factory.mktemp("split") / "messy")


@pytest.fixture(scope="module")
def grouped_dir(synthetic_dir, tmp_path_factory) -> Path:
    """Every generated image plus two re-captures of it (brighter, re-compressed): groups of 3."""
    root = Path(shutil.copytree(synthetic_dir, tmp_path_factory.mktemp("grouped") / "data"))
    for path in sorted(root.glob("*/*.jpg")):
        with Image.open(path) as image:
            for k, factor in enumerate((1.03, 1.06), 1):
                ImageEnhance.Brightness(image).enhance(factor).save(path.with_name(f"{path.stem}-v{k}.jpg"), quality=80)
    return root


def subset_of(split: Split) -> dict[str, str]:
    return {p: s for s in SUBSETS for p in split.subset(s)}


def test_split_is_stratified_and_keeps_every_usable_image_once(messy_dir):
    split = make_split(messy_dir, val=0.2, test=0.2, seed=1)
    where = subset_of(split)
    assert sum(len(split.subset(s)) for s in SUBSETS) == len(where)  # no image twice
    largest = split.meta["near_duplicate"]["largest_group"]
    for name in split.classes:
        n = sum(split.counts()[s][name] for s in SUBSETS)
        for subset in ("val", "test"):
            assert abs(split.counts()[subset][name] - 0.2 * n) <= largest
    assert all(split.labels(s) == [split.classes.index(p.split("/")[0]) for p in split.subset(s)] for s in SUBSETS)


def test_copies_conflicts_and_unreadable_files_are_left_out_and_reported(messy_dir):
    split = make_split(messy_dir, seed=3)
    where = subset_of(split)
    assert EXACT[0] in where and EXACT[1] not in where
    assert {"path": EXACT[1], "copy_of": EXACT[0]} in split.meta["dropped_duplicates"]
    assert CONFLICT[1] not in {d["path"] for d in split.meta["dropped_duplicates"]}  # a conflict, not a copy
    assert not set(CONFLICT) & set(where)
    assert any(set(CONFLICT) <= set(c["paths"]) for c in split.meta["label_conflicts"])
    assert where[NEAR[0]] == where[NEAR[1]]
    unreadable = {u["path"] for u in split.meta["unreadable"]}
    assert {"Pre/truncated.jpg", "Early/empty.jpg", "Benign/notes.txt"} <= unreadable
    assert not unreadable & set(where)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_near_duplicate_groups_never_straddle_subsets(grouped_dir, seed):
    split = make_split(grouped_dir, val=0.25, test=0.25, seed=seed)
    where = subset_of(split)
    assert len(where) == 3 * 64
    for original in sorted(grouped_dir.glob("*/*-00??.jpg")):
        trio = [original.relative_to(grouped_dir).as_posix().replace(".jpg", v) for v in (".jpg", "-v1.jpg", "-v2.jpg")]
        assert len({where[p] for p in trio}) == 1, trio
    for group in split.meta["near_duplicate_groups"]:
        assert len({where[p] for p in group}) == 1, group
    assert all(split.counts()[s][c] > 0 for s in SUBSETS for c in split.classes)


def test_same_seed_same_split_other_seed_other_split(messy_dir):
    first, again = make_split(messy_dir, seed=7), make_split(messy_dir, seed=7)
    assert first == again
    assert make_split(messy_dir, seed=8).val != first.val


def copy_classes(synthetic_dir: Path, target: Path, keep: dict[str, int]) -> Path:
    for name, count in keep.items():
        (target / name).mkdir(parents=True)
        for path in sorted((synthetic_dir / name).glob("*.jpg"))[:count]:
            shutil.copy(path, target / name / path.name)
    return target


def test_bad_data_is_refused_with_one_line(synthetic_dir, tmp_path):
    cases = [
        (copy_classes(synthetic_dir, tmp_path / "one", {"Benign": 16}), {}, "got 1 class folder"),
        (copy_classes(synthetic_dir, tmp_path / "few", {"Benign": 16, "Pro": 5}), {},
         r"class 'Pro' has 5 usable image\(s\), needs at least 7"),
        (copy_classes(synthetic_dir, tmp_path / "few2", {"Benign": 16, "Pro": 9}), {"val": 0.1, "test": 0.3},
         "needs at least 10"),
        (tmp_path / "missing", {}, "no such directory"),
        (tmp_path / "empty", {}, "no class folders"),
    ]
    (tmp_path / "empty").mkdir()
    for data_dir, options, expected in cases:
        with pytest.raises(DataError, match=expected) as err:
            make_split(data_dir, **options)
        assert "\n" not in str(err.value)


def test_a_class_that_is_one_big_group_cannot_be_split(synthetic_dir, tmp_path):
    root = copy_classes(synthetic_dir, tmp_path / "data", {"Benign": 16, "Pro": 1})
    with Image.open(root / "Pro" / "Pro-0000.jpg") as image:
        for k in range(1, 8):
            ImageEnhance.Brightness(image).enhance(1 + k / 100).save(root / "Pro" / f"again-{k}.jpg", quality=90)
    with pytest.raises(DataError, match="class 'Pro'.*near-duplicate group"):
        make_split(root)


@pytest.mark.parametrize("val, test", [(-0.1, 0.15), (1.0, 0.0), (0.15, 1.2), (0.5, 0.5), (math.nan, 0.1),
                                       ("0.1", 0.1)])
def test_fractions_out_of_range_are_refused(messy_dir, val, test):
    with pytest.raises(DataError, match="expected"):
        make_split(messy_dir, val=val, test=test)


@pytest.mark.parametrize("n", [7, 10, 33, 101])
@pytest.mark.parametrize("fractions", [(0.7, 0.15, 0.15), (0.1, 0.35, 0.55), (0.8, 0.2, 0.0)])
def test_target_counts_add_up_and_never_round_below_floor(n, fractions):
    wanted = dict(zip(SUBSETS, fractions))
    counts = target_counts(n, wanted)
    assert sum(counts.values()) == n
    assert all(math.floor(n * wanted[s]) <= counts[s] <= math.ceil(n * wanted[s]) for s in SUBSETS)


def test_written_split_reads_back_equal(messy_dir, tmp_path):
    split = make_split(messy_dir, seed=5)
    path = write_split(split, tmp_path / "deep" / "split.json")
    assert read_split(path, messy_dir) == split
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temp file left behind
    meta = split.meta
    assert meta["split_kind"] == "near-duplicate" and meta["seed"] == 5
    assert meta["data_dir"] == str(messy_dir.resolve()) and len(meta["data_fingerprint"]) == 16


def test_hand_written_minimal_split_is_accepted(synthetic_dir, tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"classes": ["Benign", "Pro"], "train": ["Pro/Pro-0001.jpg", "Benign/Benign-0002.jpg"],
                                "test": ["Pro/Pro-0003.jpg"], "note": "by hand"}))
    split = read_split(path, synthetic_dir)
    assert split.val == () and split.labels("train") == [1, 0] and split.meta == {"note": "by hand"}


GOOD = {"classes": ["Benign", "Pro"], "train": ["Benign/Benign-0000.jpg"], "val": ["Pro/Pro-0000.jpg"]}


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "got a JSON list"),
    (json.dumps({**GOOD, "classes": []}), "got classes"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "train"}), "got train = None"),
    (json.dumps({**GOOD, "train": ["Benign/none.jpg"]}), "1 file.* missing"),
    (json.dumps({**GOOD, "train": ["Early/Early-0000.jpg"]}), "folder 'Early', expected one of the classes"),
    (json.dumps({**GOOD, "test": ["Benign/Benign-0000.jpg"]}), "in both train and test"),
    (json.dumps({**GOOD, "val": ["Pro/Pro-0000.jpg", "Pro/Pro-0000.jpg"]}), "twice in val"),
    (json.dumps({**GOOD, "train": ["/abs/Benign/a.jpg"]}), "expected a relative POSIX path"),
    (json.dumps({**GOOD, "train": ["Benign/../Pro/Pro-0001.jpg"]}), "expected a relative POSIX path"),
    (json.dumps({"classes": ["Benign"], "train": []}), "names no images"),
])
def test_read_split_refuses_each_bad_file(synthetic_dir, tmp_path, content, expected):
    path = tmp_path / "split.json"
    path.write_text(content)
    with pytest.raises(DataError, match=expected) as err:
        read_split(path, synthetic_dir)
    assert "\n" not in str(err.value)


def test_read_split_needs_the_file_and_the_data(synthetic_dir, tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_split(tmp_path / "nope.json", synthetic_dir)
    (tmp_path / "s.json").write_text(json.dumps(GOOD))
    with pytest.raises(DataError, match="no such directory"):
        read_split(tmp_path / "s.json", tmp_path / "nodata")
    with pytest.raises(DataError, match="expected one of train, val, test"):
        read_split(tmp_path / "s.json", synthetic_dir).subset("validation")


@pytest.mark.realdata
def test_real_data_split_keeps_near_duplicates_together(real_data_dir):
    split = make_split(real_data_dir)
    where = subset_of(split)
    meta = split.meta
    assert meta["near_duplicate_groups"], "the real data has near-identical captures: some groups expected"
    for group in meta["near_duplicate_groups"]:
        assert len({where[p] for p in group}) == 1, group
    dropped = {d["path"] for d in meta["dropped_duplicates"]}
    assert not dropped & set(where)
    found = len(where) + len(dropped) + sum(len(c["paths"]) for c in meta["label_conflicts"]) + len(meta["unreadable"])
    assert found == sum(1 for p in real_data_dir.rglob("*") if p.is_file())
    assert all(split.counts()[s][c] > 0 for s in SUBSETS for c in split.classes)
