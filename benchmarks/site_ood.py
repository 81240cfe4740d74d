"""`allx-edge calibrate` on a simulated site camera, real smears: the OOD flag and quality check before and after.

The model folder is one `allx convert --int8` wrote (OOD statistics inside). The "site" sees the split's test
images through a colour cast and JPEG re-compression (a different camera and a video stream); half of
them calibrate (`edge_runner.calibrate.calibrate_site`, labels given), the other half are held out. Measured
through EdgeModel, as allx-edge runs: the share of held-out site images flagged "unlike training images"
by the shipped and by the site's threshold, the share of another lab's normal lymphocytes (pbc-lymphocytes)
flagged by each (does re-calibration blind the flag?), the site accuracy the calibration reported, and
whether the default acceptance (--max-drop) passed.

Usage:
    python benchmarks/site_ood.py --model MODEL_DIR --split RUN/split.json --data ../shared/data/all-taleqani/Original
        --other ../shared/data/pbc-lymphocytes [--out benchmarks/results/site_ood.json]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from allx.files import write_json  # noqa: E402
from allx.images import is_image_file, load_image  # noqa: E402
from allx.edge_runner.calibrate import DEFAULT_MAX_DROP, acceptance_failures, calibrate_site  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.train.split import read_split  # noqa: E402
from site_calibration import CASTS, site_camera  # noqa: E402

MAX_OTHER = 300


def flagged_share(model: EdgeModel, pixels) -> float:
    return float(np.mean([model.classify(x).ood for x in pixels]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--other", type=Path, required=True)
    parser.add_argument("--cast", default="tungsten", choices=sorted(CASTS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "site_ood.json")
    args = parser.parse_args()
    shipped = EdgeModel.load(args.model)
    split = read_split(args.split, args.data)
    test = sorted(split.test)
    work = Path(tempfile.mkdtemp(prefix="allx-site-"))
    fit_dir, rows, held = work / "site", [["path", "label"]], []
    fit_dir.mkdir()
    for index, relpath in enumerate(test):
        pixels = site_camera(load_image(args.data / relpath, shipped.input_size), CASTS[args.cast])
        if index % 2 == 0:
            name = f"{index:05}.png"
            Image.fromarray(pixels).save(fit_dir / name)
            rows.append([name, relpath.split("/")[0]])
        else:
            held.append(pixels)
    with open(work / "labels.csv", "w", newline="") as file:
        csv.writer(file).writerows(rows)
    # max_drop 1: write the folder whatever the acceptance says, to measure the flag it would ship
    calibration = calibrate_site(args.model, fit_dir, work / "model", labels_csv=work / "labels.csv", max_drop=1.0)
    site = EdgeModel.load(work / "model")
    others = sorted(p for p in args.other.rglob("*") if is_image_file(p))
    others = [load_image(p, shipped.input_size) for p in others[:: max(1, len(others) // MAX_OTHER)][:MAX_OTHER]]
    originals = [load_image(args.data / relpath, shipped.input_size) for relpath in test[1::2]]
    result = {"kind": "benchmark", "benchmark": "site_ood", "time_utc": datetime.now(timezone.utc).isoformat(
        timespec="seconds"), "model": str(args.model), "cast": args.cast, "gain": CASTS[args.cast],
        "site_fit_images": len(rows) - 1, "site_held_images": len(held), "other_lab_images": len(others),
        "ood": calibration.ood, "quality": calibration.quality,
        "accuracy": None if calibration.accuracy is None else asdict(calibration.accuracy),
        "acceptance_failures": acceptance_failures(calibration.accuracy, DEFAULT_MAX_DROP),
        "held_flagged_shipped": flagged_share(shipped, held), "held_flagged_site": flagged_share(site, held),
        "original_test_flagged_shipped": flagged_share(shipped, originals),
        "other_lab_flagged_shipped": flagged_share(shipped, others),
        "other_lab_flagged_site": flagged_share(site, others)}
    write_json(args.out, result)
    for key in ("held_flagged_shipped", "held_flagged_site", "original_test_flagged_shipped",
                "other_lab_flagged_shipped", "other_lab_flagged_site"):
        print(f"{key}: {result[key]:.1%}")


if __name__ == "__main__":
    main()
