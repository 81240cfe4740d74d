"""train.augment, train.view_features, train.image_pipeline: smear augmentation and its cached views."""

import json

import numpy as np
import pytest

from allx.dihedral import dihedral_views
from allx.errors import UsageError
from allx.train.augment import (Augmentation, blur, parse_augmentation, random_crop, random_view, stain_jitter,
                                training_views)


def smear(size=32, seed=0) -> np.ndarray:
    """A pinkish field with a purple disc off centre (asymmetric, so views differ)."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), (230, 200, 210), np.float32) + rng.normal(0, 4, (size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    image[(yy - size // 3) ** 2 + (xx - size // 4) ** 2 < (size // 6) ** 2] = (110, 60, 150)
    return np.clip(image, 0, 255).astype(np.uint8)


def test_parse_keeps_a_fixed_order_and_refuses_unknown_names():
    assert parse_augmentation("stain, dihedral").kinds == ("dihedral", "stain")
    assert parse_augmentation("none").kinds == () and parse_augmentation("").kinds == ()
    with pytest.raises(UsageError, match="got rotate.*expected a comma-separated subset of dihedral, stain"):
        parse_augmentation("dihedral,rotate")
    with pytest.raises(UsageError, match="--augment-copies: got 9"):
        parse_augmentation("stain", copies=9)


@pytest.mark.parametrize("text,copies,views", [("", 2, 1), ("dihedral", 2, 8), ("dihedral,stain", 2, 10),
                                               ("stain,blur", 3, 4), ("dihedral,crop", 0, 8)])
def test_training_views_are_the_clean_views_then_the_jittered_copies(text, copies, views):
    augmentation = parse_augmentation(text, copies)
    image = smear()
    got = training_views(image, augmentation, np.random.default_rng(0))
    assert len(got) == augmentation.views_per_image == views
    clean = dihedral_views(image) if "dihedral" in augmentation.kinds else [image]
    for view, expected in zip(got, clean):
        assert np.array_equal(view, expected)
    assert all(view.shape == image.shape and view.dtype == np.uint8 for view in got)


def test_the_same_seed_gives_the_same_jittered_views():
    augmentation = parse_augmentation("dihedral,stain,crop,blur", 2)
    first = training_views(smear(), augmentation, np.random.default_rng([7, 3]))
    again = training_views(smear(), augmentation, np.random.default_rng([7, 3]))
    other = training_views(smear(), augmentation, np.random.default_rng([7, 4]))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first[8:], other[8:]))


def test_stain_jitter_changes_colour_not_layout():
    image = smear()
    jittered = stain_jitter(image, np.random.default_rng(1), sigma=0.1)
    assert jittered.shape == image.shape and not np.array_equal(jittered, image)
    assert np.corrcoef(jittered.astype(float).ravel(), image.astype(float).ravel())[0, 1] > 0.9
    assert np.array_equal(stain_jitter(image, np.random.default_rng(1), sigma=0.0), image)


def test_crop_keeps_the_size_and_blur_smooths():
    image = smear(seed=2)
    assert random_crop(image, np.random.default_rng(0)).shape == image.shape
    assert blur(image, 1.0).astype(float).std() < image.astype(float).std()


def test_random_view_with_dihedral_only_is_one_of_the_eight():
    image = smear()
    keys = {view.tobytes() for view in dihedral_views(image)}
    rng = np.random.default_rng(0)
    assert all(random_view(image, Augmentation(("dihedral",)), rng).tobytes() in keys for _ in range(10))


def test_cache_key_part_changes_with_the_augmentation():
    keys = [json.dumps(parse_augmentation(text, copies).key(), sort_keys=True)
            for text, copies in (("", 2), ("dihedral", 2), ("dihedral,stain", 2), ("dihedral,stain", 3),
                                 ("dihedral,blur", 2))]
    assert len(set(keys)) == len(keys)
    assert parse_augmentation("dihedral", 2).key() == parse_augmentation("dihedral", 5).key(), \
        "copies only matter when something random is on"


class MeanColour:
    """A stand-in extractor: the mean colour of each view (rotation-blind) plus its top-left pixel."""

    output_shape = (None, 6)

    def __init__(self):
        self.calls = 0

    def predict_on_batch(self, pixels):
        self.calls += 1
        return np.concatenate([pixels.mean(axis=(1, 2)), pixels[:, 0, 0, :]], axis=1)


def write_images(folder, n=5, size=32):
    from PIL import Image

    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(smear(size, seed=i)).save(folder / f"c-{i}.png")
    return [f"c-{i}.png" for i in range(n)]


def test_view_features_are_cached_image_major_and_reused(tmp_path):
    from allx.train.view_features import extract_view_features, mean_over_views

    relpaths = write_images(tmp_path / "data") + ["missing.png"]
    augmentation = parse_augmentation("dihedral")
    extractor = MeanColour()
    features = extract_view_features(extractor, tmp_path / "data", relpaths, [0, 1, 0, 1, 0, 1], (32, 32),
                                     augmentation, tmp_path / "cache" / "k.npy")
    assert features.features.shape == (5 * 8, 6) and features.paths[:8] == ("c-0.png",) * 8
    assert list(features.labels[:16]) == [0] * 8 + [1] * 8
    assert [path for path, _ in features.skipped] == ["missing.png"]
    corners = np.stack([view[0, 0] for view in dihedral_views(smear(32, seed=1))])
    assert np.allclose(np.asarray(features.features[8:16, 3:], np.float32), corners, atol=0.5)
    pooled = mean_over_views(np.asarray(features.features, np.float32), 8)
    assert pooled.shape == (5, 6)
    calls = extractor.calls
    again = extract_view_features(extractor, tmp_path / "data", relpaths, [0, 1, 0, 1, 0, 1], (32, 32),
                                  augmentation, tmp_path / "cache" / "k.npy")
    assert extractor.calls == calls and np.array_equal(again.features, features.features)
    assert not list((tmp_path / "cache").glob("*partial*"))


def test_view_features_from_first_view_keep_only_the_jittered_copies(tmp_path):
    from allx.train.view_features import extract_view_features

    relpaths = write_images(tmp_path / "data", n=2)
    augmentation = parse_augmentation("dihedral,stain", 2)
    full = extract_view_features(MeanColour(), tmp_path / "data", relpaths, [0, 1], (32, 32), augmentation,
                                 tmp_path / "cache" / "full.npy", seed=3)
    copies = extract_view_features(MeanColour(), tmp_path / "data", relpaths, [0, 1], (32, 32), augmentation,
                                   tmp_path / "cache" / "copies.npy", seed=3, first_view=8)
    assert copies.features.shape == (2 * 2, 6)
    assert np.array_equal(np.asarray(copies.features[:2]), np.asarray(full.features[8:10]))


def test_image_pipeline_gives_augmented_batches(tmp_path):
    from allx.train.image_pipeline import image_dataset

    relpaths = write_images(tmp_path / "data", n=3)
    data = image_dataset(tmp_path / "data", relpaths, [0, 1, 2], 3, (32, 32), batch_size=2,
                         augmentation=Augmentation(("dihedral",)), shuffle=True, seed=0)
    batches = list(data.as_numpy_iterator())
    assert [len(x) for x, _ in batches] == [2, 1]
    pixels = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches]).argmax(1)
    assert pixels.dtype == np.float32 and sorted(labels) == [0, 1, 2]
    for view, label in zip(pixels, labels):
        keys = {v.astype(np.float32).tobytes() for v in dihedral_views(smear(32, seed=int(label)))}
        assert view.tobytes() in keys, "every image arrives as one of its own dihedral views"
