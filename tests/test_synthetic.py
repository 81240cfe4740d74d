"""The generated data set is what the demo and most tests train on: it must be well formed."""

from allx.images import load_image
from allx.synthetic import CLASSES


def test_synthetic_set_has_every_class_and_readable_images(synthetic_dir):
    folders = sorted(p.name for p in synthetic_dir.iterdir())
    assert folders == sorted(CLASSES)
    files = sorted(synthetic_dir.glob("*/*.jpg"))
    assert len(files) == 4 * 16
    assert load_image(files[0]).shape == (48, 48, 3)
    assert (synthetic_dir.parent / "data.NOTE.json").read_text().count("not medical") == 1
