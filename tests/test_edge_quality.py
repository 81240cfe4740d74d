"""edge_runner.quality: focus, exposure and colour measures, the limits from model.json, and the reasons."""

import numpy as np
from PIL import Image, ImageFilter

from allx.edge_runner.manifest_check import check_manifest
from allx.edge_runner.quality import QualityLimits, check_quality, limits_in_use, measure


def smear(seed: int = 0, size: int = 64) -> np.ndarray:
    """A sharp, mid-exposed, pinkish texture."""
    rng = np.random.default_rng(seed)
    base = np.array([200, 150, 180], np.float32)
    return np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)


def limits(**override) -> QualityLimits:
    values = {"focus_min": 100.0, "shadows_max": 0.05, "highlights_max": 0.05, "colour_mean": (200.0, 150.0, 180.0),
              "colour_std": (5.0, 5.0, 5.0), "colour_max": 4.0}
    return QualityLimits(**{**values, **override})


def test_a_sharp_well_exposed_field_passes():
    result = check_quality(smear(), limits())
    assert result.ok and result.reasons == ()


def test_a_blurred_copy_is_rejected_with_its_focus():
    blurred = np.asarray(Image.fromarray(smear()).filter(ImageFilter.GaussianBlur(2)))
    assert measure(blurred).focus < measure(smear()).focus / 10
    result = check_quality(blurred, limits())
    assert not result.ok and result.reasons[0].startswith("blurred: focus ") and result.reasons[0].endswith("< 100")


def test_clipped_shadows_highlights_and_odd_colour_each_say_why():
    dark, bright = smear(), smear()
    dark[:20] = 0
    bright[:, :20] = 255
    assert any(r.startswith("under-exposed") for r in check_quality(dark, limits(colour_max=99)).reasons)
    assert any(r.startswith("over-exposed") for r in check_quality(bright, limits(colour_max=99)).reasons)
    blue = smear().copy()
    blue[..., 2] = 255
    assert any(r.startswith("unusual stain colour") for r in check_quality(blue, limits()).reasons)


def test_a_manifest_without_statistics_names_the_features_that_are_off():
    found, warnings = limits_in_use(check_manifest({}, "model.json").quality)
    assert found is None and "focus, exposure, colour" in warnings[0] and "allx convert" in warnings[0]
    found, warnings = limits_in_use(check_manifest({"quality": {"focus_min": 10.0}}, "model.json").quality)
    assert found.focus_min == 10.0 and "exposure, colour" in warnings[0]
    assert check_quality(smear(), found).ok  # what is there is still checked; the rest is not


def test_limits_round_trip_through_json():
    import json

    stored = json.loads(json.dumps(limits().to_dict()))
    assert QualityLimits.from_dict(stored) == limits()
    assert limits_in_use(check_manifest({"quality": stored}, "model.json").quality) == (limits(), ())
