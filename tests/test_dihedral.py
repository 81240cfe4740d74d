"""allx.dihedral: the 8 views are exact rotations/mirrors, and averaging over them is what TTA means."""

import numpy as np
import pytest

from allx.dihedral import N_VIEWS, average_over_views, dihedral_view, dihedral_views


def asymmetric_image(height=5, width=5) -> np.ndarray:
    return np.arange(height * width * 3, dtype=np.uint8).reshape(height, width, 3)


def test_views_are_exact_rotations_and_mirrors():
    image = asymmetric_image()
    views = dihedral_views(image)
    assert len(views) == N_VIEWS == 8
    assert np.array_equal(views[0], image)
    assert np.array_equal(views[1], np.rot90(image, 1))
    assert np.array_equal(views[2], image[::-1, ::-1])
    assert np.array_equal(views[3], np.rot90(image, 3))
    assert np.array_equal(views[4], image[:, ::-1])
    assert np.array_equal(views[6], image[::-1, :])
    assert np.array_equal(views[5], np.rot90(image[:, ::-1], 1))
    assert np.array_equal(views[7], image.transpose(1, 0, 2)[::-1, ::-1])


def test_views_are_distinct_and_closed_under_composition():
    image = asymmetric_image()
    keys = {view.tobytes() for view in dihedral_views(image)}
    assert len(keys) == 8, "an image without symmetry has 8 different views"
    for view in dihedral_views(image):
        assert {v.tobytes() for v in dihedral_views(view)} == keys, "the views form a group"


def test_batch_views_equal_per_image_views():
    batch = np.stack([asymmetric_image(), asymmetric_image()[::-1]])
    for index in range(N_VIEWS):
        together = dihedral_view(batch, index)
        assert np.array_equal(together[1], dihedral_view(batch[1], index))


def test_non_square_views_swap_height_and_width():
    image = asymmetric_image(4, 6)
    assert [v.shape[:2] for v in dihedral_views(image)] == [(4, 6), (6, 4)] * 2 + [(4, 6), (6, 4)] * 2


def test_tta_of_a_symmetric_model_equals_no_tta():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)

    def symmetric_model(batch):  # depends on the colour means only: blind to rotations and mirrors
        means = np.asarray(batch, np.float32).reshape(len(batch), -1, 3).mean(axis=1)
        scores = np.exp(means / 64.0)
        return scores / scores.sum(axis=1, keepdims=True)

    assert np.allclose(average_over_views(symmetric_model, image), symmetric_model(image[None])[0], atol=1e-6)


def test_tta_is_the_mean_over_the_views():
    image = asymmetric_image(6, 6)

    def corner_model(batch):  # looks at the top-left pixel only: sees a different pixel in every view
        corner = np.asarray(batch, np.float32)[:, 0, 0, :]
        return corner / corner.sum(axis=1, keepdims=True).clip(1)

    expected = np.mean([corner_model(v[None])[0] for v in dihedral_views(image)], axis=0)
    assert np.allclose(average_over_views(corner_model, image), expected)


@pytest.mark.parametrize("index", [-1, 8])
def test_bad_view_index(index):
    with pytest.raises(ValueError, match="expected 0..7"):
        dihedral_view(asymmetric_image(), index)
