"""Occlusion maps: the grid covers every pixel, drops land where the answer rests, batches equal single runs."""

import numpy as np
import pytest
from edge_models import LABELS, tiny_models
from PIL import Image
from typer.testing import CliRunner

from allx.edge_runner.cli import app
from allx.edge_runner.explain import (GREY, Occlusion, RandomMasks, explain, explain_files, fill_image,
                                      overlay)
from allx.edge_runner.model import EdgeModel
from allx.errors import UsageError


class RegionModel:
    """Probability of class 0 rises with the brightness of one square region and nothing else (numpy only),
    so an honest occlusion map must put its mass in that region."""

    input_size = (32, 32)
    labels = ("Bright", "Dark")
    takes_batches = False

    def __init__(self, box):
        self.box = box

    def predict_one(self, pixels):
        y0, y1, x0, x1 = self.box
        bright = pixels[y0:y1, x0:x1].mean() / 255.0
        return np.array([bright, 1.0 - bright], np.float32)

    def predict_batch(self, pixels, batch=1):
        return np.stack([self.predict_one(p) for p in pixels])


@pytest.fixture(scope="module")
def tiny():
    return tiny_models()


def test_grid_covers_every_pixel_and_refuses_bad_sizes():
    assert Occlusion.for_size((224, 224)) == Occlusion(56, 28)
    assert Occlusion(56, 28).starts(224) == [0, 28, 56, 84, 112, 140, 168]
    assert Occlusion(10, 7).starts(32)[-1] == 22  # the last square ends at the edge
    with pytest.raises(UsageError, match="expected 0 < stride <= patch"):
        Occlusion(40, 8).starts(32)


def test_map_mass_lies_on_the_region_the_answer_rests_on():
    box = (8, 16, 16, 24)
    pixels = np.full((32, 32, 3), 250, np.uint8)
    result = explain(RegionModel(box), pixels, Occlusion.for_size((32, 32)))
    assert result.label == "Bright" and result.copies == 49 and result.invokes == 50
    mask = np.zeros((32, 32), bool)
    mask[box[0]:box[1], box[2]:box[3]] = True
    uniform_share = mask.mean()  # what a flat map would put inside
    assert result.mass_inside(mask) > 3 * uniform_share
    assert result.heat[28:, :4].max() == 0  # a corner far from the region: covering it changes nothing


def test_corner_value_is_the_drop_of_the_one_square_covering_it(tiny):
    model = EdgeModel.load(tiny.int8, labels=tiny.labels_file, threads=1)
    pixels = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    squares = Occlusion.for_size(model.input_size)
    result = explain(model, pixels, squares)
    base = model.predict_one(pixels)
    covered = pixels.copy()
    covered[:8, :8] = GREY  # the only square over pixel (0, 0) at the default 8-pixel grid
    expected = base[result.class_index] - model.predict_one(covered)[result.class_index]
    assert result.heat[0, 0] == pytest.approx(expected, abs=1e-6)
    assert result.label == LABELS[int(np.argmax(base))] and result.heat.shape == (32, 32)
    batched = explain(model, pixels, squares, batch=8)  # 49 copies, 8 per invoke: 7 invokes and the field's own
    assert batched.invokes == 8 and result.invokes == 50
    np.testing.assert_allclose(batched.heat, result.heat, atol=1e-6)


def test_batches_give_the_same_probabilities_as_single_runs(tiny):
    model = EdgeModel.load(tiny.int8, labels=tiny.labels_file, threads=1)
    assert model.takes_batches
    images = np.random.default_rng(6).integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)  # not a multiple of 8
    single = np.stack([model.predict_one(image) for image in images])
    np.testing.assert_allclose(model.predict_batch(images), single, atol=1.5 / 256)
    assert model.predict(images[0]).shape == (len(LABELS),)  # back to one image per invoke afterwards


def test_overlay_paints_only_where_the_probability_dropped():
    pixels = np.full((32, 32, 3), 200, np.uint8)
    result = explain(RegionModel((0, 8, 0, 8)), pixels, Occlusion.for_size((32, 32)))
    painted = np.asarray(overlay(pixels, result))
    assert painted.shape == pixels.shape
    assert (painted[31, 31] == pixels[31, 31]).all()  # no drop: the field as it was
    peak = np.unravel_index(np.argmax(result.heat), result.heat.shape)
    assert painted[peak][0] > painted[peak][2] + 50  # the largest drop: red over the grey field


def test_classify_explain_writes_one_overlay_per_image(tiny, tmp_path):
    folder = tmp_path / "fields"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "maps"
    result = CliRunner().invoke(app, ["classify", str(folder), "-m", str(tiny.int8), "--labels", str(tiny.labels_file),
                                      "--no-log", "--explain", str(out)])
    assert result.exit_code == 1  # the broken file fails its row, as without --explain
    assert sorted(p.name for p in out.iterdir()) == ["a.occlusion.png", "b.occlusion.png"]
    assert Image.open(out / "a.occlusion.png").size == (32, 32)
    assert "2 occlusion map(s) written" in result.output
    with pytest.raises(UsageError, match="expected a folder"):
        explain_files(EdgeModel.load(tiny.int8, labels=tiny.labels_file), [], folder / "a.png")


def test_the_default_map_is_blurred_random_masks(tiny):
    model = EdgeModel.load(tiny.int8, labels=tiny.labels_file, threads=1)
    pixels = np.random.default_rng(8).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    result = explain(model, pixels)
    assert result.copies == 96 and result.invokes == 97
    named = explain(model, pixels, RandomMasks(count=96, grid=8, covered=0.5, fill="blur"))
    np.testing.assert_array_equal(result.heat, named.heat)


def test_random_masks_cover_about_their_share_the_same_way_every_time():
    masks = RandomMasks(count=64, grid=4, covered=0.5, seed=3)
    covers = masks.covers((32, 32))
    assert covers.shape == (64, 32, 32) and covers.min() >= 0.0 and covers.max() <= 1.0
    assert 0.4 < covers.mean() < 0.6  # every pixel hidden in about half the copies
    np.testing.assert_array_equal(covers, masks.covers((32, 32)))  # seeded: a field's map does not flicker
    assert not np.array_equal(covers, RandomMasks(count=64, grid=4, covered=0.5, seed=4).covers((32, 32)))
    with pytest.raises(UsageError, match="expected count >= 2"):
        RandomMasks(count=1).covers((32, 32))


def test_random_masks_put_the_mass_on_the_region_the_answer_rests_on():
    box = (8, 16, 16, 24)
    result = explain(RegionModel(box), np.full((32, 32, 3), 250, np.uint8), RandomMasks(count=64, grid=4, fill="grey"))
    mask = np.zeros((32, 32), bool)
    mask[box[0]:box[1], box[2]:box[3]] = True
    assert result.copies == 64 and result.invokes == 65
    assert result.mass_inside(mask) > 2 * mask.mean()
    assert result.heat[mask].mean() > result.heat[~mask].mean()


def test_fills_show_grey_the_field_mean_or_the_field_blurred():
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, 16:] = 200
    assert (fill_image(pixels, "grey") == GREY).all()
    np.testing.assert_allclose(fill_image(pixels, "mean")[0, 0], [100, 100, 100])
    blurred = fill_image(pixels, "blur")
    assert 0 < blurred[16, 15, 0] < 200 and blurred[16, 0, 0] < 10  # the edge is smeared, far pixels stay
    with pytest.raises(UsageError, match="expected one of grey, mean, blur"):
        fill_image(pixels, "noise")


class ConstantModel(RegionModel):
    """The same probabilities whatever is hidden: a saturated answer."""

    def predict_one(self, pixels):
        return np.array([0.7, 0.3], np.float32)


@pytest.mark.parametrize("method", [Occlusion(8, 4), RandomMasks(count=32, grid=4)])
def test_a_map_where_nothing_moved_the_probability_is_exactly_flat(method):
    result = explain(ConstantModel((0, 1, 0, 1)), np.full((32, 32, 3), 90, np.uint8), method)
    assert not result.heat.any() and result.mass_inside(np.ones((32, 32), bool)) == 0.0
