"""The representative set: stratified, train-only, exact count, loaded like training, input range pinned."""

import numpy as np
import pytest

from allx.errors import DataError
from allx.images import load_image
from allx.convert.representative import calibration_batches, class_quotas, draw_representative, load_representative
from allx.train.split import Split

CLASSES = ("Benign", "Early", "Pre", "Pro")


def make_split(per_class=(10, 20, 30, 40), val=3):
    train = tuple(f"{c}/{c}-{i:03d}.jpg" for c, n in zip(CLASSES, per_class) for i in range(n))
    held = tuple(f"{c}/{c}-held-{i}.jpg" for c in CLASSES for i in range(val))
    return Split(CLASSES, train, held, held[:0], {})


def test_quotas_are_proportional_and_exact():
    counts = np.array([10, 20, 30, 40])
    for count in (1, 4, 7, 33, 99, 100):
        quotas = class_quotas(counts, count)
        assert quotas.sum() == count and (quotas <= counts).all()
        assert np.all(np.abs(quotas - counts / counts.sum() * count) < 1)


def test_draw_is_stratified_train_only_and_seeded():
    split = make_split()
    drawn = draw_representative(split, 50, seed=3)
    assert len(drawn) == len(set(drawn)) == 50
    assert set(drawn) <= set(split.train) and not set(drawn) & set(split.val)
    per_class = [sum(p.startswith(c + "/") for p in drawn) for c in CLASSES]
    assert per_class == [5, 10, 15, 20]
    assert draw_representative(split, 50, seed=3) == drawn
    assert draw_representative(split, 50, seed=4) != drawn


def test_default_count_is_capped_by_a_small_train_subset_but_an_explicit_one_is_not():
    from allx.convert.modes import DEFAULT_REPRESENTATIVE_COUNT

    split = make_split()  # 100 train images
    assert len(draw_representative(split, None)) == min(DEFAULT_REPRESENTATIVE_COUNT, 100)
    with pytest.raises(DataError, match="expected at most 100"):
        draw_representative(split, DEFAULT_REPRESENTATIVE_COUNT)


def test_draw_refuses_more_than_train_or_an_empty_train():
    with pytest.raises(DataError, match="expected at most 100"):
        draw_representative(make_split(), 101)
    with pytest.raises(DataError, match="train subset of the split is empty"):
        draw_representative(Split(CLASSES, (), ("Benign/a.jpg",), (), {}), 1)


def test_loading_matches_the_one_image_loader(synthetic_dir):
    relpaths = ("Benign/Benign-0000.jpg", "Pro/Pro-0003.jpg")
    pixels = load_representative(synthetic_dir, relpaths, (32, 24))
    assert pixels.shape == (2, 32, 24, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[1], load_image(synthetic_dir / relpaths[1], (32, 24)))


def test_loading_reports_an_unreadable_image(tmp_path):
    (tmp_path / "Benign").mkdir()
    (tmp_path / "Benign" / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="representative image unreadable"):
        load_representative(tmp_path, ("Benign/bad.jpg",), (8, 8))
    with pytest.raises(DataError, match="empty"):
        load_representative(tmp_path, (), (8, 8))


def test_calibration_pins_the_input_range_to_0_255():
    pixels = np.full((3, 8, 8, 3), 128, np.uint8)  # a grey set that never reaches 0 or 255
    batches = list(calibration_batches(pixels)())
    assert len(batches) == 3 and all(b[0].shape == (1, 8, 8, 3) and b[0].dtype == np.float32 for b in batches)
    values = np.concatenate([b[0].ravel() for b in batches])
    assert values.min() == 0 and values.max() == 255
    assert (pixels == 128).all()  # the caller's array is untouched
    assert (batches[1][0] == 128).all()
