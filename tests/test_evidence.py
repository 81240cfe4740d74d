"""allx.evidence: the one record of how a shipped figure was measured."""

import numpy as np

from allx.evidence import (FILE_BLOCKS, OUT_OF_GROUP, SHARES_GROUPS, SINGLE_IMAGES, Evidence, group_interval,
                           rate_record)


def test_record_has_one_shape_and_reads_back():
    evidence = Evidence(OUT_OF_GROUP, FILE_BLOCKS, 56, 5, 2604, (0.031, 0.05))
    record = evidence.to_dict()
    assert record == {"on": "out-of-group", "grouping": "sequence", "groups": 56, "folds": 5, "images": 2604,
                      "interval": [0.031, 0.05]}
    assert Evidence.from_dict(record) == evidence
    assert Evidence.from_dict({"on": "val"}) is None and Evidence.from_dict(None) is None


def test_words_say_out_of_group_or_shared_with_training():
    out = Evidence(OUT_OF_GROUP, FILE_BLOCKS, 56, 5, 2604, (0.031, 0.05)).words()
    assert out.startswith("out of group: 5 folds over 56 groups (blocks of consecutive file numbers")
    assert "2,604 images" in out and "95% interval 3.1%-5.0%" in out
    shared = Evidence(SHARES_GROUPS, "near-duplicate", 260, 0, 260).words()
    assert shared.startswith("on images that share groups with training (near-duplicate groups")
    assert "interval" not in shared


def test_single_images_mean_no_numbers_out_of_group_and_an_image_level_split_on_the_split_s_images():
    fallback = Evidence(OUT_OF_GROUP, SINGLE_IMAGES, 400, 5, 400).words()
    assert "no file numbers to stand in for them" in fallback
    random_split = Evidence(SHARES_GROUPS, SINGLE_IMAGES, 260, 0, 260).words()
    assert "an image-level split: no grouping" in random_split and "file numbers" not in random_split


def test_interval_resamples_whole_groups():
    rng = np.random.default_rng(0)
    # 20 groups of 50 images: whole groups are flagged or not, so the images are not independent
    flags = np.repeat(rng.random(20) < 0.3, 50)
    groups = np.repeat(np.arange(20), 50)
    low, high = group_interval(flags, groups)
    images_alone = group_interval(flags, np.arange(1000))
    assert low <= flags.mean() <= high
    assert high - low > 3 * (images_alone[1] - images_alone[0])  # resampling images would claim far more certainty


def test_rate_record_counts_and_carries_the_evidence():
    record = rate_record([True, False, False, False], ["a", "a", "b", "b"], Evidence(OUT_OF_GROUP, FILE_BLOCKS, 2, 2, 0))
    assert record["rate"] == 0.25 and record["n"] == 4
    assert record["evidence"]["images"] == 4 and record["evidence"]["on"] == "out-of-group"
    assert len(record["evidence"]["interval"]) == 2
