"""The image-quality check on real smears: good fields kept, blurred and badly exposed copies rejected.

The limits are calibrated exactly as `allx convert` does (convert/calibrate_quality.py) on a training
block, then applied (edge_runner/quality.py, what allx-edge runs) to a held-out block of later file
numbers of every class and to degraded copies of those images: Gaussian blur (Pillow GaussianBlur,
sigma in pixels at the model's 224 px input), under-exposure (pixel values x 0.35) and over-exposure
(x 1.8, clipped). Blocks of consecutive file numbers keep neighbouring captures of one slide on one side.

With a model folder (--model DIR from `allx convert`), the cost of quality check + aggregation is
measured side by side with plain classification on the same decoded fields, as a ratio.

Usage:
    nice -n 10 python benchmarks/quality.py [--data ../shared/data/all-taleqani/Original] [--model DIR]
        [--out benchmarks/results/quality.json]
    python benchmarks/quality.py --quick     (generated images; tests the script)
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from allx.convert.calibrate_quality import MAX_IMAGES, calibrate_limits, draw_evenly, measure_images  # noqa: E402
from allx.edge_runner.quality import check_quality  # noqa: E402
from allx.files import write_atomic  # noqa: E402
from allx.images import is_image_file, load_image  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "all-taleqani" / "Original"
SIZE = (224, 224)
BLURS = (1.0, 1.5, 2.0, 3.0)
HELD_OUT = 0.2  # the last 20 % of each class's file numbers
TARGET_BLURRED, TARGET_GOOD = 0.90, 0.03


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="a folder with one sub-folder per class")
    parser.add_argument("--model", type=Path, default=None, help="a model folder for the overhead ratio")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "quality.json")
    parser.add_argument("--quick", action="store_true", help="generated images (tests the script)")
    return parser.parse_args(argv)


def number_of(path: Path) -> int:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else -1


def blocks(data: Path) -> tuple[list[str], list[str]]:
    """(train block, held-out block) as paths relative to `data`: per class, by file number."""
    train, held_out = [], []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted((p for p in folder.iterdir() if is_image_file(p)), key=number_of)
        cut = int(round(len(files) * (1 - HELD_OUT)))
        train += [str(p.relative_to(data)) for p in files[:cut]]
        held_out += [str(p.relative_to(data)) for p in files[cut:]]
    return train, held_out


def degraded(pixels: np.ndarray) -> dict[str, np.ndarray]:
    image = Image.fromarray(pixels)
    copies = {f"blur_sigma_{sigma:g}": np.asarray(image.filter(ImageFilter.GaussianBlur(sigma))) for sigma in BLURS}
    copies["under_exposed_x0.35"] = (pixels * 0.35).astype(np.uint8)
    copies["over_exposed_x1.8"] = np.clip(pixels.astype(np.float32) * 1.8, 0, 255).astype(np.uint8)
    return copies


def rejection_rates(data: Path, relpaths: list[str], limits) -> tuple[dict, dict]:
    """Share rejected per kind of copy ("good" = the image as it is), and the reasons' first words."""
    rejected: dict[str, list[bool]] = {}
    reasons: dict[str, dict[str, int]] = {}
    for relpath in relpaths:
        pixels = load_image(data / relpath, SIZE)
        for kind, copy in {"good": pixels, **degraded(pixels)}.items():
            result = check_quality(copy, limits)
            rejected.setdefault(kind, []).append(not result.ok)
            for reason in result.reasons:
                word = reason.split(":")[0]
                reasons.setdefault(kind, {}).setdefault(word, 0)
                reasons[kind][word] += 1
    return {kind: float(np.mean(flags)) for kind, flags in rejected.items()}, reasons


def overhead(model_dir: Path, data: Path, relpaths: list[str]) -> dict:
    """Per-field time of classify alone vs quality check + classify + aggregation, on the same decoded fields."""
    from allx.edge_runner.model import EdgeModel
    from allx.edge_runner.sample import SampleSession

    model = EdgeModel.load(model_dir)
    fields = [load_image(data / p, model.input_size) for p in relpaths]
    for pixels in fields[:5]:
        model.classify(pixels)  # warm-up
    timings = {"classify": [], "sample": []}
    for _ in range(3):  # interleaved rounds, so both see the same machine load
        start = time.perf_counter()
        for pixels in fields:
            model.classify(pixels)
        timings["classify"].append((time.perf_counter() - start) / len(fields))
        session = SampleSession(model, "bench")
        start = time.perf_counter()
        for i, pixels in enumerate(fields):
            session.add_pixels(str(i), pixels)
            if (i + 1) % 5 == 0:  # one verdict per pseudo-sample of five fields
                session.verdict()
                session = SampleSession(model, "bench")
        timings["sample"].append((time.perf_counter() - start) / len(fields))
    plain, full = min(timings["classify"]), min(timings["sample"])
    return {"model": str(model_dir), "fields": len(fields), "classify_ms_per_field": plain * 1e3,
            "with_quality_and_aggregation_ms_per_field": full * 1e3, "ratio": full / plain,
            "target_ratio_at_most": 1.15}


def quick_data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("Benign", "Pre"):
        (root / name).mkdir(parents=True)
        for i in range(40):
            pixels = np.clip(np.array([200, 150, 190]) + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}-{i:03d}.png")
    return root


def main(argv=None) -> int:
    args = parse_args(argv)
    data = args.data
    if args.quick:
        import tempfile

        data = quick_data(Path(tempfile.mkdtemp(prefix="allx-quality-")) / "data")
    if not data.is_dir():
        print(f"error: {data}: no such folder, expected the image data (one sub-folder per class)", file=sys.stderr)
        return 2
    train, held_out = blocks(data)
    start = time.perf_counter()
    limits = calibrate_limits(measure_images(data, draw_evenly(train, MAX_IMAGES), SIZE))
    rates, reasons = rejection_rates(data, held_out, limits)
    command = "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"kind": "benchmark", "benchmark": "quality", "command": command.strip(), "data": str(data),
              "quick": args.quick,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "split": f"per class, the last {HELD_OUT:.0%} of file numbers held out; limits calibrated on up to "
                       "600 images of the rest (as allx convert does on train)",
              "train_images": len(train), "held_out_images": len(held_out), "limits": limits.to_dict(),
              "rejected": rates, "reasons": reasons,
              "targets": {"blurred_rejected_at_least": TARGET_BLURRED, "good_rejected_at_most": TARGET_GOOD},
              "seconds": time.perf_counter() - start}
    if args.model is not None:
        result["overhead"] = overhead(args.model, data, held_out[:200])
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    print(f"good held-out fields rejected: {rates['good']:.2%} (target <= {TARGET_GOOD:.0%}); blurred copies "
          "rejected: " + ", ".join(f"sigma {s:g}: {rates[f'blur_sigma_{s:g}']:.1%}" for s in BLURS)
          + f" (target >= {TARGET_BLURRED:.0%}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
