"""Does `allx-edge calibrate` fit the image-quality check to a new site's camera without blinding it?

Real smears (all-taleqani/Original) stand for two labs: the "lab" that trained the model (the first 60%
of each class by file number; its quality limits are chosen as `allx convert` chooses them) and a "site"
whose camera differs (the other 40%, seen through a colour cast and JPEG re-compression, as a different
white balance and a video stream would give). Half of the site's images calibrate, the other half are
held out. Measured with the very functions allx-edge runs (edge_runner.quality; numpy only, no model):

  - good site fields rejected by the lab's limits and by the site's (the reason for calibrating)
  - blurred copies of held-out site fields still rejected by the site's limits (the check stays useful)
  - the lab's own held-back fields rejected by the lab's limits (the baseline)

Usage:
    python benchmarks/site_calibration.py [--data ../shared/data/all-taleqani/Original]
        [--out benchmarks/results/site_calibration.json]
"""

from __future__ import annotations

import argparse
import io
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from allx.files import write_json  # noqa: E402
from allx.images import is_image_file, load_image  # noqa: E402
from allx.edge_runner.quality import calibrate_limits, judge, measure  # noqa: E402

SIZE = (224, 224)
CASTS = {"bluish": (0.88, 1.0, 1.12), "tungsten": (1.1, 1.0, 0.8)}  # per-channel gains: two white balances
JPEG_QUALITY = 35  # a compressed video frame
BLUR_RADIUS = 2.0
LAB_SHARE = 0.6
MAX_PER_SET = 400  # images per measured set, drawn evenly (keeps the run to a minute)


def evenly(items: list, count: int) -> list:
    return items if len(items) <= count else [items[int(i)] for i in np.linspace(0, len(items) - 1, count)]


def split_by_file_number(data: Path) -> tuple[list[Path], list[Path]]:
    lab, site = [], []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if is_image_file(p))
        cut = int(len(files) * LAB_SHARE)
        lab += files[:cut]
        site += files[cut:]
    return lab, site


def site_camera(pixels: np.ndarray, gain) -> np.ndarray:
    """The site's view of a field: colour cast, then JPEG re-compression."""
    cast = np.clip(pixels.astype(np.float32) * np.array(gain, np.float32), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(cast).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def blurred(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))


def rejected(measures, limits) -> float:
    return float(np.mean([not judge(m, limits).ok for m in measures]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "all-taleqani" / "Original")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "site_calibration.json")
    args = parser.parse_args()
    lab, site = split_by_file_number(args.data)
    lab_fit, lab_held = evenly(lab[0::2], MAX_PER_SET), evenly(lab[1::2], MAX_PER_SET)
    site_fit, site_held = evenly(site[0::2], MAX_PER_SET), evenly(site[1::2], MAX_PER_SET)
    lab_limits = calibrate_limits([measure(load_image(p, SIZE)) for p in lab_fit])
    result = {"kind": "benchmark", "benchmark": "site_calibration",
              "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": str(args.data),
              "jpeg_quality": JPEG_QUALITY, "blur_radius": BLUR_RADIUS,
              "images": {"lab_fit": len(lab_fit), "lab_held": len(lab_held), "site_fit": len(site_fit),
                         "site_held": len(site_held)},
              "lab_held_rejected_by_lab_limits": rejected([measure(load_image(p, SIZE)) for p in lab_held], lab_limits),
              "lab_limits": lab_limits.to_dict(), "sites": {}}
    for name, gain in CASTS.items():
        site_limits = calibrate_limits([measure(site_camera(load_image(p, SIZE), gain)) for p in site_fit])
        held = [site_camera(load_image(p, SIZE), gain) for p in site_held]
        held_measures, blurred_measures = [measure(x) for x in held], [measure(blurred(x)) for x in held]
        result["sites"][name] = {
            "gain": gain, "held_rejected_by_lab_limits": rejected(held_measures, lab_limits),
            "held_rejected_by_site_limits": rejected(held_measures, site_limits),
            "blurred_rejected_by_lab_limits": rejected(blurred_measures, lab_limits),
            "blurred_rejected_by_site_limits": rejected(blurred_measures, site_limits),
            "site_limits": site_limits.to_dict()}
    write_json(args.out, result)
    print(f"lab's held-back fields rejected by the lab's limits: {result['lab_held_rejected_by_lab_limits']:.1%}")
    for name, site in result["sites"].items():
        print(f"{name} site: good fields rejected {site['held_rejected_by_lab_limits']:.1%} (lab limits) -> "
              f"{site['held_rejected_by_site_limits']:.1%} (site limits); blurred copies rejected "
              f"{site['blurred_rejected_by_site_limits']:.1%} (site limits)")


if __name__ == "__main__":
    main()
