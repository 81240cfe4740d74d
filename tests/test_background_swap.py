"""Background swap composites: the source's cells on another class's cell-free background, seeded, checked masks."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from allx.cli.main import app
from allx.errors import DataError
from allx.train.background_swap import (BackgroundSwap, Composites, check_cell_masks, composite, grown,
                                        segmented_cells, without_cells)

SIZE = 48
PURPLE = (120, 40, 170)  # a stained white cell: red and blue well above green
BACKGROUNDS = {"Benign": (235, 235, 235), "Early": (200, 215, 240), "Pre": (225, 205, 230), "Pro": (240, 235, 190)}


def field(background, centre, radius=8) -> tuple[np.ndarray, np.ndarray]:
    """A flat field with one purple disc: (its pixels, the disc as a mask)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    pixels = np.empty((SIZE, SIZE, 3), np.uint8)
    pixels[:] = background
    pixels[disc] = PURPLE
    return pixels, disc


def write_set(root: Path, per_class: int = 2) -> tuple[list[str], list[int]]:
    """Original/ and Segmented/ folders (PNG, so colours stay exact): each class its own background colour,
    each image a disc somewhere; the Segmented copy is the disc on black."""
    relpaths, labels = [], []
    for label, (name, colour) in enumerate(BACKGROUNDS.items()):
        for i in range(per_class):
            pixels, disc = field(colour, (12 + 20 * i, 14 + 6 * label))
            relpath = f"{name}/{name}-{i}.png"
            for folder, image in (("Original", pixels), ("Segmented", np.where(disc[..., None], pixels, 0))):
                (root / folder / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.astype(np.uint8)).save(root / folder / relpath)
            relpaths.append(relpath)
            labels.append(label)
    return relpaths, labels


def composites_of(root: Path, relpaths, labels, seed=0, copies=3) -> Composites:
    donors = check_cell_masks(root / "Original", root / "Segmented", relpaths)
    return Composites(BackgroundSwap(root / "Segmented", copies), root / "Original", relpaths, labels,
                      (SIZE, SIZE), seed, donors)


def background_colour(pixels: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in pixels[0, -1])  # the top-right corner: far from every disc


def test_a_composite_keeps_the_source_cells_and_the_donor_background():
    source, source_cells = field(BACKGROUNDS["Benign"], (12, 12))
    donor, donor_cells = field(BACKGROUNDS["Pro"], (34, 34))
    mixed = composite(source, source_cells, donor, donor_cells)
    assert np.array_equal(mixed[source_cells], source[source_cells]), "the cell's own pixels"
    away = ~grown(source_cells)
    assert np.array_equal(mixed[away], without_cells(donor, donor_cells)[away])
    assert (mixed[donor_cells & away] == BACKGROUNDS["Pro"]).all(), "the donor's cell painted out"
    assert not (mixed[away] == PURPLE).all(axis=-1).any(), "no purple left outside the source's cell"


def test_segmented_cells_are_the_bright_pixels_with_small_gaps_closed():
    _, disc = field(BACKGROUNDS["Benign"], (24, 24))
    segmented = np.where(disc[..., None], 200, 0).astype(np.uint8)
    segmented[24, 24] = 0  # a dark speck the segmentation left inside the cell
    assert np.array_equal(segmented_cells(segmented), disc)


def test_each_composite_has_its_source_cell_on_another_class_background(tmp_path):
    relpaths, labels = write_set(tmp_path)
    made = composites_of(tmp_path, relpaths, labels)
    for index, (relpath, label) in enumerate(zip(relpaths, labels)):
        pixels = np.asarray(Image.open(tmp_path / "Original" / relpath).convert("RGB"))
        disc = segmented_cells(np.asarray(Image.open(tmp_path / "Segmented" / relpath).convert("RGB")))
        views = made.views(index, pixels)
        assert len(views) == 3
        for view in views:
            assert np.array_equal(view[disc], pixels[disc])
            own = list(BACKGROUNDS.values())[label]
            assert background_colour(view) in [c for c in BACKGROUNDS.values() if c != own], relpath


def test_composites_are_the_same_under_a_seed_and_change_with_it(tmp_path):
    relpaths, labels = write_set(tmp_path, per_class=3)
    pixels = np.asarray(Image.open(tmp_path / "Original" / relpaths[0]).convert("RGB"))
    first = composites_of(tmp_path, relpaths, labels, seed=7).views(0, pixels)
    again = composites_of(tmp_path, relpaths, labels, seed=7).views(0, pixels)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    others = [composites_of(tmp_path, relpaths, labels, seed=s).views(0, pixels) for s in range(8)]
    assert any(not all(np.array_equal(a, b) for a, b in zip(first, other)) for other in others), \
        "another seed draws other donors"


def test_an_image_without_a_cell_stands_in_for_its_composites(tmp_path):
    relpaths, labels = write_set(tmp_path)
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "Segmented" / relpaths[0])
    blank = np.full((SIZE, SIZE, 3), 235, np.uint8)
    views = composites_of(tmp_path, relpaths, labels).views(0, blank)
    assert all(np.array_equal(view, blank) for view in views), "a background alone would teach a wrong class"


def test_view_features_append_the_composites_after_the_clean_view(tmp_path):
    from allx.train.augment import Augmentation
    from allx.train.view_features import extract_view_features
    from tests.test_augment import MeanColour

    relpaths, labels = write_set(tmp_path)
    made = composites_of(tmp_path, relpaths, labels, copies=2)
    features = extract_view_features(MeanColour(), tmp_path / "Original", relpaths, labels, (SIZE, SIZE),
                                     Augmentation(), tmp_path / "cache" / "k.npy", composites=made)
    assert features.features.shape == (len(relpaths) * 3, 6) and features.paths[:3] == (relpaths[0],) * 3
    corners = np.asarray(features.features[:, 3:], np.float32).reshape(len(relpaths), 3, 3)
    assert np.allclose(corners[:, 0], [list(BACKGROUNDS.values())[label] for label in labels], atol=0.5)
    # (the corner feature is the top-left pixel; every disc sits away from it)
    assert all(tuple(np.rint(c)) != list(BACKGROUNDS.values())[label] for row, label in zip(corners, labels)
               for c in row[1:])


@pytest.mark.parametrize("damage, message", [
    ("missing", "no mask for Pre/Pre-1.png"),
    ("resized", "is 24x24 pixels, expected the size of Pre/Pre-1.png, 48x48"),
    ("garbled", "is not a readable image"),
])
def test_a_missing_or_mismatched_mask_is_one_error_naming_it(tmp_path, damage, message):
    relpaths, _ = write_set(tmp_path)
    mask = tmp_path / "Segmented" / "Pre" / "Pre-1.png"
    if damage == "missing":
        mask.unlink()
    elif damage == "resized":
        Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(mask)
    else:
        mask.write_bytes(b"not an image")
    with pytest.raises(DataError, match=message):
        check_cell_masks(tmp_path / "Original", tmp_path / "Segmented", relpaths)


@pytest.mark.parametrize("masks, message", [
    ("missing-file", "no mask for"),
    ("no-folder", "--cell-masks: got"),
])
def test_the_cli_refuses_bad_masks_with_one_line_and_exit_2(synthetic_dir, tmp_path, masks, message):
    folder = tmp_path / "masks"
    if masks == "missing-file":
        for image in sorted(synthetic_dir.glob("*/*.jpg"))[1:]:  # every mask but the first image's
            (folder / image.parent.name).mkdir(parents=True, exist_ok=True)
            Image.open(image).save(folder / image.parent.name / image.name)
    outcome = CliRunner().invoke(app, ["train", str(synthetic_dir), "--out", str(tmp_path / "run"), "--image-size",
                                       "48", "--cell-masks", str(folder)])
    assert outcome.exit_code == 2, outcome.output
    assert "Traceback" not in outcome.output and message in outcome.output
    assert len(outcome.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, message", [
    (["--swap-copies", "0"], "--swap-copies: got 0"),
    (["--fine-tune-layers", "2"], "--cell-masks with --fine-tune-layers 2"),
    (["--cv", "3"], "--cell-masks with --cv"),
])
def test_options_that_do_not_fit_the_swap_are_refused(synthetic_dir, tmp_path, options, message):
    outcome = CliRunner().invoke(app, ["train", str(synthetic_dir), "--out", str(tmp_path / "run"), "--image-size",
                                       "48", "--cell-masks", str(synthetic_dir), *options])
    assert outcome.exit_code == 2, outcome.output
    assert message in outcome.output and "Traceback" not in outcome.output


def test_a_run_with_cell_masks_trains_on_three_views_per_image_and_says_so(synthetic_dir, tmp_path):
    from allx.train.background_swap import stain_mask
    from allx.train.trainer import TrainConfig, train_model

    for image in synthetic_dir.glob("*/*.jpg"):  # Segmented-like masks: the stained pixels kept, the rest black
        pixels = np.asarray(Image.open(image).convert("RGB"))
        (tmp_path / "masks" / image.parent.name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(stain_mask(pixels)[..., None], pixels, 0).astype(np.uint8)).save(
            tmp_path / "masks" / image.parent.name / image.name)
    config = TrainConfig(data_dir=synthetic_dir, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                         backbone="efficientnet-lite0", image_size=48, epochs=1, head="gap", features="last",
                         augment="none", cell_masks=tmp_path / "masks")
    result = train_model(config)
    markers = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("*.json")]
    train_paths = json.loads((result.run_dir / "split.json").read_text())["train"]
    swapped = [m for m in markers if m.get("views_per_image") == 3]
    assert len(swapped) == 1 and len(swapped[0]["paths"]) == 3 * len(train_paths), "train only, 1 + 2 views"
    assert "Background swap: 2 composites per training image" in (result.run_dir / "MODEL_CARD.md").read_text()
    assert json.loads((result.run_dir / "train_config.json").read_text())["cell_masks"] == str(tmp_path / "masks")


def test_the_cache_key_part_changes_with_a_mask_and_with_the_copies(tmp_path):
    from allx.train.features import content_hashes

    relpaths, _ = write_set(tmp_path)
    swap = BackgroundSwap(tmp_path / "Segmented", 2)
    before = swap.key(content_hashes(swap.masks_dir, relpaths))
    assert BackgroundSwap(swap.masks_dir, 3).key(content_hashes(swap.masks_dir, relpaths)) != before
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "Segmented" / relpaths[0])
    assert swap.key(content_hashes(swap.masks_dir, relpaths)) != before
