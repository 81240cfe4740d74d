"""5-fold grouped cross-validation of each backbone on the real data: the numbers that hold on new patients.

    nice -n 10 python benchmarks/cv.py [DATA_DIR] [--work runs/bench-cv]   # real data, ~15-40 min on 2 cores
    python benchmarks/cv.py --quick                                         # generated images, ~1 min

For each backbone (EfficientNet-Lite0 with its packaged ImageNet weights, ResNet50 with the weights that
work offline: none unless a local file is given), `allx train DATA --cv 5 --group-by sequence` with the
default recipe: folds hold out whole blocks of consecutive file numbers per class (embedding
near-neighbours joined), features are extracted once and cached, each fold's head stops early and
chooses its operating point on the fold's own validation part. Writes benchmarks/results/cv.json
(one entry per backbone: the summary of its cv.json) and prints the README table.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from pathlib import Path

from allx.layout import SplitKind
from allx.text import markdown_table
from allx.train.cv import CVConfig, cross_validate
from allx.train.embeddings import SIMILARITY
from allx.train.groups import DEFAULT_BLOCK_SIZE
from allx.train.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "all-taleqani" / "Original"
BACKBONES = (("efficientnet-lite0", "imagenet"), ("resnet50", "none"))
COLUMNS = (("accuracy", "accuracy"), ("malignant_sensitivity", "sensitivity (argmax)"),
           ("benign_specificity", "specificity (argmax)"), ("op_sensitivity", "sensitivity @ op"),
           ("op_specificity", "specificity @ op"))


def run_backbone(data_dir: Path, work: Path, backbone: str, weights: str, folds: int, quick: bool) -> dict:
    tiny = dict(image_size=32, epochs=3, batch_size=16, head="gap", learning_rate=1e-3,
                cache_dir=work / "cache") if quick else {}
    settings = TrainConfig(data_dir=data_dir, out_dir=work / backbone, backbone=backbone, weights=weights, **tiny)
    config = CVConfig(train=settings, folds=folds, group_by=SplitKind.SEQUENCE,
                      block_size=2 if quick else DEFAULT_BLOCK_SIZE, similarity=None if quick else SIMILARITY)
    started = time.perf_counter()
    result = cross_validate(config, progress=lambda stage, done, total: print(
        f"\r{backbone}: {stage} {done}/{total}   ", end="", flush=True))
    print()
    return entry_from(result.path, backbone, weights, time.perf_counter() - started)


def entry_from(path: Path, backbone: str, weights: str, seconds: float | None) -> dict:
    """One table row from a run's cv.json (its settings say which recipe the backbone's defaults were)."""
    document = json.loads(path.read_text())
    if not document["complete"]:
        raise SystemExit(f"{path}: only {document['folds_done']} of {document['folds']} folds finished")
    settings = document["settings"]
    return {"backbone": backbone, "weights": weights, "recipe": "default", "head": settings.get("head"),
            "features": settings.get("features"), "augment": settings.get("augment"),
            "folds": document["folds"], "split_kind": document["split_kind"], "grouping": document["grouping"],
            "seconds_total": None if seconds is None else round(seconds, 1), "summary": document["summary"],
            "cv_json": str(path), "per_fold_n_test": [f["n_test"] for f in document["results"]],
            "per_fold_seconds": [f.get("seconds") for f in document["results"]]}


def table(entries: list[dict]) -> str:
    header = ("backbone", "weights", *(label for _, label in COLUMNS), "worst-fold specificity @ op", "time")
    rows = []
    for entry in entries:
        cells = []
        for key, _ in COLUMNS:
            m = entry["summary"].get(key) or {}
            cells.append("n/a" if m.get("mean") is None else f"{m['mean']:.3f} ({m['low']:.3f}-{m['high']:.3f})")
        worst = (entry["summary"].get("op_specificity") or {}).get("min")
        rows.append((entry["backbone"], entry["weights"], *cells, "n/a" if worst is None else f"{worst:.3f}",
                     minutes(entry["seconds_total"])))
    return "\n".join(markdown_table(header, rows))


def minutes(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 60:.1f} min"


def parse_backbone(text: str) -> tuple[str, str]:
    """"name" or "name:weights"; without weights, the offline default of BACKBONES (else imagenet)."""
    name, _, weights = text.partition(":")
    return name, weights or dict(BACKBONES).get(name, "imagenet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=REAL_DATA)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bench-cv", help="run folders (cv.json, cv.png)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cv.json")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--backbone", action="append", help="name[:weights]; default: Lite0 and ResNet50")
    parser.add_argument("--quick", action="store_true", help="generated images, tiny settings (a smoke test)")
    parser.add_argument("--collect", action="store_true",
                        help="train nothing: tabulate the cv.json already in --work/<backbone>/ (runs done apart)")
    args = parser.parse_args()
    if args.quick:
        from allx.synthetic import make_dataset

        args.data_dir = make_dataset(args.work / "data", per_class=12, size=32, seed=0)
        args.folds = 3
    chosen = [parse_backbone(b) for b in args.backbone] if args.backbone else list(BACKBONES)
    if args.collect:
        entries = [entry_from(args.work / b / "cv.json", b, w, None) for b, w in chosen]
    else:
        entries = [run_backbone(args.data_dir, args.work, b, w, args.folds, args.quick) for b, w in chosen]
    document = {"kind": "benchmark", "benchmark": "cv", "data_dir": str(args.data_dir), "quick": args.quick,
                "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": "nice -n 10 python benchmarks/cv.py", "entries": entries}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    print(table(entries))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
