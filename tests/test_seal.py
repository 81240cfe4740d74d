"""edge_runner/seal.py: the sealing key only moves forward, and a verification key is read strictly."""

import pytest

from allx.edge_runner.seal import VerifyKey, evolve, parse_verify_key, seal_tag, tag_matches
from allx.errors import UsageError


def test_the_key_moves_forward_one_way_and_each_epoch_tags_differently():
    k0 = b"\x01" * 32
    k1, k2 = evolve(k0), evolve(k0, 2)
    assert len({k0, k1, k2}) == 3 and evolve(k1) == k2 and len(k1) == 32
    item = {"epoch": 2, "head_id": 7, "head_hash": "ab" * 32, "time_utc": "2026-12-01T00:00:00Z"}
    item["tag"] = seal_tag(k2, "log", item)
    assert tag_matches(k2, "log", item) and not tag_matches(k1, "log", item)
    assert not tag_matches(k2, "other log", item) and not tag_matches(k2, "log", {**item, "head_id": 6})
    assert VerifyKey("log", 0, k0).key_at(2) == k2


def test_a_verification_key_is_read_from_text_or_file_and_strictly(tmp_path):
    key = VerifyKey("ab" * 16, 3, b"\x02" * 32)
    assert parse_verify_key(str(key)) == key
    (tmp_path / "vk.txt").write_text(f"{key}\n")
    assert parse_verify_key(str(tmp_path / "vk.txt")) == key
    for bad in ("allx-vk1:x", f"allx-vk1:{'ab' * 16}:-1:{'02' * 32}", f"allx-vk1:{'ab' * 16}:3:zz", "nothing"):
        with pytest.raises(UsageError, match="--verify-key: got"):
            parse_verify_key(bad)
