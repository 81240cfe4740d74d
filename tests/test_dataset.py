"""Scanning a class-folder image set, its fingerprint, and the duplicate / near-duplicate report."""

import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from allx.errors import DataError
from allx.train import duplicates as dup
from allx.train.dataset import data_fingerprint, inspect_dataset, scan_dataset
from allx.train.duplicates import ImageRecord, close_pairs, group_records

from messy_data import CONFLICT, EXACT, NEAR, make_messy_copy


@pytest.fixture
def messy_dir(synthetic_dir, tmp_path) -> Path:
    return make_messy_copy(synthetic_dir, tmp_path / "messy")


def test_scan_lists_classes_images_and_skipped_files(messy_dir):
    dataset = scan_dataset(messy_dir)
    assert dataset.classes == ("Benign", "Early", "Pre", "Pro")
    paths = dict(dataset.items)
    assert paths["Pre/conflict.jpg"] == 2 and paths["Pro/grey.png"] == 3
    assert "Pre/truncated.jpg" in paths  # its header reads: only decoding finds it
    skipped = dict(dataset.unreadable)
    assert set(skipped) == {"Benign/notes.txt", "Early/empty.jpg", "Early/fake.png"}
    assert "not an image file" in skipped["Benign/notes.txt"] and "0 bytes" in skipped["Early/empty.jpg"]
    assert dataset.count_per_class() == {"Benign": 17, "Early": 16, "Pre": 18, "Pro": 18}


@pytest.mark.parametrize("make, expected", [
    (lambda tmp: tmp / "missing", "no such directory"),
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", "is a file"),
    (lambda tmp: tmp, "no class folders"),
    (lambda tmp: ((tmp / "A").mkdir(), (tmp / "A" / "a.txt").write_text("x")) and tmp, "no readable images"),
])
def test_scan_rejects_bad_data_dirs(tmp_path, make, expected):
    with pytest.raises(DataError, match=expected) as err:
        scan_dataset(make(tmp_path))
    assert "\n" not in str(err.value)


def png_header(width: int, height: int) -> bytes:
    """A PNG declaring width x height with almost no pixel data: enough for Pillow to read its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_decompression_bombs_are_listed_not_opened(synthetic_dir, tmp_path):
    root = Path(shutil.copytree(synthetic_dir, tmp_path / "data"))
    (root / "Pro" / "huge.png").write_bytes(png_header(30_000, 30_000))  # refused by Pillow on open
    (root / "Pro" / "large.png").write_bytes(png_header(8_000, 8_000))  # refused by the allx loader
    assert "Pro/huge.png" in dict(scan_dataset(root).unreadable)
    unreadable = dict(inspect_dataset(root).unreadable)
    assert "decompression bomb" in unreadable["Pro/huge.png"] and "too large" in unreadable["Pro/large.png"]


def test_fingerprint_follows_content_and_order(synthetic_dir, tmp_path):
    root = Path(shutil.copytree(synthetic_dir, tmp_path / "data"))
    paths = [p for p, _ in scan_dataset(root).items][:5]
    first = data_fingerprint(root, paths)
    assert first == data_fingerprint(root, paths) and len(first) == 16
    assert data_fingerprint(root, paths[::-1]) != first  # cached features are aligned with the order
    target = root / paths[0]
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert data_fingerprint(root, paths) != first
    assert data_fingerprint(root, paths + ["Benign/gone.jpg"]) != data_fingerprint(root, paths)


def test_inspect_finds_every_planted_problem(messy_dir):
    report = inspect_dataset(messy_dir).to_json()
    assert report["total"] == 16 * 4 + 4  # copy, conflict, near, grey; truncated is unreadable
    assert report["per_class"]["Pro"] == 18
    unreadable = {u["path"]: u["reason"] for u in report["unreadable"]}
    assert set(unreadable) == {"Benign/notes.txt", "Early/empty.jpg", "Early/fake.png", "Pre/truncated.jpg"}
    assert report["sizes"] == {"48x48": 67, "30x40": 1} and report["modes"] == {"RGB": 67, "L": 1}
    assert list(EXACT) in report["duplicate_groups"] and list(CONFLICT) in report["duplicate_groups"]
    assert list(NEAR) not in report["duplicate_groups"]
    near_groups = [set(g) for g in report["near_duplicate_groups"]]
    assert any(set(NEAR) <= g for g in near_groups)
    assert any(set(EXACT) <= g for g in near_groups)  # exact copies are always grouped too
    exact_conflicts = [c for c in report["label_conflicts"] if c["kind"] == "exact"]
    assert len(exact_conflicts) == 1 and set(CONFLICT) <= set(exact_conflicts[0]["paths"])
    assert exact_conflicts[0]["classes"] == ["Early", "Pre"]
    assert report["near_duplicate"]["largest_group"] == max(len(g) for g in near_groups)


def test_inspect_with_zero_distance_groups_only_identical_hashes(messy_dir):
    duplicates = inspect_dataset(messy_dir, distance=0).duplicates
    for group in duplicates.near_groups:
        hashes = {r.phash for r in duplicates.records if r.relpath in group}
        assert len(hashes) == 1


def test_close_pairs_match_brute_force_across_blocks(monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 40, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, 40).astype(np.uint64)
    hashes = np.concatenate([base, base ^ flips, base[:5] ^ np.uint64(0b111111)])
    monkeypatch.setattr(dup, "MAX_BLOCK", 7 * len(hashes))  # force several blocks
    found = {tuple(p) for p in close_pairs(hashes, 6).tolist()}
    expected = {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 6}
    assert found == expected and len(expected) >= 45


def test_groups_chain_through_intermediate_images():
    def record(name, bits):
        return ImageRecord(f"A/{name}.jpg", name, bits, 8, 8, "RGB")

    # a-b and b-c differ by 6 bits, a-c by 12: at distance 10 the chain joins all three
    records = [record("a", 0), record("b", 0b111111), record("c", 0b111111111111), record("d", 2**63 - 1)]
    assert group_records(records, (), 10)[0] == ("A/a.jpg", "A/b.jpg", "A/c.jpg")
    assert all(len(g) == 1 for g in group_records(records, (), 5))
    joined = group_records(records, (("A/a.jpg", "A/d.jpg"),), 0)  # exact copies are joined whatever the hash
    assert ("A/a.jpg", "A/d.jpg") in joined
