"""Benchmark: head training on cached backbone features vs a naive `model.fit` on images, 10 epochs each.

    python benchmarks/training_speed.py                       # real data (../shared/data/all-taleqani/Original)
    python benchmarks/training_speed.py --quick               # generated images, anyone can run it
    python benchmarks/training_speed.py --backbone resnet50 --weights none --limit 800

Both runs train the same head (Flatten -> Dropout(0.5) -> Dense) on the same frozen backbone for the same
number of epochs, without early stopping, one after the other in this process. "cached" includes the one
feature-extraction pass (with an empty cache), so the ratio is honest for a first training run.
Writes JSON (default benchmarks/results/training_speed.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "all-taleqani" / "Original"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REAL_DATA, help="data folder (default: the real data set)")
    parser.add_argument("--quick", action="store_true", help="generated 64x64 images instead of real data")
    parser.add_argument("--backbone", default="efficientnet-lite0", help="backbone name (default efficientnet-lite0)")
    parser.add_argument("--weights", default=None, help="imagenet | none | PATH (default: the backbone's)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=1000, help="training images used (stratified head of the split)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "training_speed.json")
    args = parser.parse_args()

    import keras

    from allx.train.backbones import get_backbone
    from allx.train.batches import ImageBatches, feature_batches
    from allx.train.features import extract_features
    from allx.train.head import build_head
    from allx.train.split import make_split

    work = Path(tempfile.mkdtemp(prefix="allx-bench-"))
    data = args.data
    if args.quick:
        from allx.synthetic import make_dataset

        data = make_dataset(work / "data", per_class=40, size=64)
    split = make_split(data, val=0.1, test=0.1, seed=0)
    relpaths, labels = list(split.train)[: args.limit], split.labels("train")[: args.limit]
    backbone = get_backbone(args.backbone)
    size = (64, 64) if args.quick else tuple(backbone.input_size)
    weights = args.weights or backbone.default_weights
    n = len(split.classes)

    def build():
        keras.utils.set_random_seed(0)
        pixels = keras.Input((*size, 3))
        base = backbone.make_base(weights, (*size, 3))
        base.trainable = False
        features = base(backbone.make_preprocessing()(pixels), training=False)
        head = build_head(base.output_shape[1:], n)
        head.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
        model = keras.Model(pixels, head(features))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
        return keras.Model(pixels, features), head, model

    extractor, head, _ = build()
    start = time.perf_counter()
    cached = extract_features(extractor, data, relpaths, labels, size, work / "features.npy")
    extract_s = time.perf_counter() - start
    head.fit(feature_batches(cached.features, cached.labels, n, args.batch_size, shuffle=True),
             epochs=args.epochs, shuffle=False, verbose=0)
    cached_s = time.perf_counter() - start

    _, _, naive_model = build()
    start = time.perf_counter()
    naive_model.fit(ImageBatches(data, relpaths, labels, n, size, args.batch_size, shuffle=True),
                    epochs=args.epochs, shuffle=False, verbose=0)
    naive_s = time.perf_counter() - start

    result = {
        "benchmark": "training_speed", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "data": "generated (synthetic, not medical)" if args.quick else str(data),
        "backbone": args.backbone, "weights": weights, "image_size": list(size), "images": len(relpaths),
        "epochs": args.epochs, "cached_s": round(cached_s, 2), "feature_extraction_s": round(extract_s, 2),
        "naive_s": round(naive_s, 2), "speedup": round(naive_s / cached_s, 2),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'method':<10}{'seconds':>10}\n{'naive':<10}{naive_s:>10.1f}\n{'cached':<10}{cached_s:>10.1f}"
          f"  (feature extraction {extract_s:.1f})\nspeedup: {naive_s / cached_s:.1f}x  ->  {args.out}")


if __name__ == "__main__":
    main()
