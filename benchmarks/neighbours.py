"""Which images are near-neighbours, and how far apart in file number? The measurement behind
`allx.train.embeddings.SIMILARITY` and `allx.train.groups.DEFAULT_BLOCK_SIZE`.

    nice -n 10 python benchmarks/neighbours.py [DATA_DIR] [--examples DIR]

Embeds every image once (EfficientNet-Lite0, cached), then reports
- pairs per cosine-similarity band: how many, how many within one class, their file-number lag;
- the mean similarity of two files of one class as a function of their file-number lag, against
  unrelated pairs of that class (how long a run of related captures is);
- per candidate block size: the fewest blocks in a class, and the share of neighbour pairs that a block
  boundary would cut (those pairs are joined anyway, but chained joins make large groups).
With --examples, saves side-by-side PNGs of a few pairs in each band to look at.
Writes benchmarks/results/neighbours.json.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from allx.train.dataset import scan_dataset
from allx.train.duplicates import class_of
from allx.train.embeddings import SIMILARITY, image_embeddings, similar_pairs
from allx.train.groups import file_number

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "all-taleqani" / "Original"
BANDS = (0.50, 0.60, 0.70, 0.80, 0.85, 0.90, 0.95, 1.0001)
BLOCKS = (8, 16, 24, 32, 48, 64, 100)
MAX_LAG = 120


def lag_curve(paths, vectors, rng) -> dict:
    """Mean cosine of same-class pairs at each file-number lag (in sorted order) vs random same-class pairs."""
    curve, baseline = {}, []
    sums = np.zeros(MAX_LAG + 1)
    counts = np.zeros(MAX_LAG + 1)
    for name in sorted({class_of(p) for p in paths}):
        index = sorted((k for k, p in enumerate(paths) if class_of(p) == name), key=lambda k: file_number(paths[k]))
        v = vectors[index]
        for lag in range(1, min(MAX_LAG, len(index) - 1) + 1):
            sims = np.sum(v[:-lag] * v[lag:], axis=1)
            sums[lag] += sims.sum()
            counts[lag] += len(sims)
        a, b = rng.integers(0, len(index), 20000), rng.integers(0, len(index), 20000)
        keep = np.abs(a - b) > MAX_LAG
        baseline += np.sum(v[a[keep]] * v[b[keep]], axis=1).tolist()
    for lag in range(1, MAX_LAG + 1):
        curve[lag] = round(float(sums[lag] / counts[lag]), 4)
    return {"mean_cosine_by_lag": curve, "unrelated_same_class": round(float(np.mean(baseline)), 4),
            "unrelated_p95": round(float(np.percentile(baseline, 95)), 4)}


def band_table(paths, pairs) -> list[dict]:
    rows = []
    for low, high in zip(BANDS[:-1], BANDS[1:]):
        inside = [(i, j) for i, j, s in pairs if low <= s < high]
        same = [(i, j) for i, j in inside if class_of(paths[i]) == class_of(paths[j])]
        lags = [abs(file_number(paths[i]) - file_number(paths[j])) for i, j in same]
        rows.append({"band": [low, min(high, 1.0)], "pairs": len(inside), "same_class": len(same),
                     "median_lag": float(np.median(lags)) if lags else None,
                     "lag_le_3": round(float(np.mean(np.array(lags) <= 3)), 3) if lags else None,
                     "lag_le_10": round(float(np.mean(np.array(lags) <= 10)), 3) if lags else None,
                     "lag_le_32": round(float(np.mean(np.array(lags) <= 32)), 3) if lags else None})
    return rows


def block_table(paths, pairs, threshold) -> list[dict]:
    rows = []
    by_class = {}
    for k, p in enumerate(paths):
        by_class.setdefault(class_of(p), []).append(k)
    position = {}
    for members in by_class.values():
        for rank, k in enumerate(sorted(members, key=lambda k: file_number(paths[k]))):
            position[k] = rank
    near = [(i, j) for i, j, s in pairs if s >= threshold and class_of(paths[i]) == class_of(paths[j])]
    for size in BLOCKS:
        cut = sum(position[i] // size != position[j] // size for i, j in near)
        rows.append({"block_size": size, "fewest_blocks_in_a_class": min(-(-len(m) // size) for m in by_class.values()),
                     "neighbour_pairs": len(near), "pairs_cut_by_a_boundary": cut,
                     "share_cut": round(cut / max(len(near), 1), 3)})
    return rows


def split_leakage_table(root: Path, threshold: float) -> list[dict]:
    """Near-neighbour pairs crossing the subsets of a seed-42 70/15/15 split, per grouping kind."""
    from allx.layout import SplitKind
    from allx.train.groups import make_groups
    from allx.train.leakage import split_leakage
    from allx.train.split import split_groups

    fractions = {"train": 0.7, "val": 0.15, "test": 0.15}
    rows = []
    for kind, similarity in ((SplitKind.NEAR_DUPLICATE, None), (SplitKind.NEAR_DUPLICATE, threshold),
                             (SplitKind.SEQUENCE, threshold)):
        grouping = make_groups(root, kind, similarity=similarity)
        split = split_groups(grouping, fractions, 42)
        leakage = split_leakage(root, split, grouping.duplicates, threshold)
        rows.append({"split_kind": kind.value, "neighbours_joined": similarity is not None,
                     "groups": len(grouping.groups), "largest_group": grouping.method["largest_group"],
                     "test": len(split.test), **{k: v.to_json() for k, v in leakage.items()}})
    return rows


def save_examples(root: Path, paths, pairs, out: Path, rng) -> None:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for low, high in zip(BANDS[:-1], BANDS[1:]):
        inside = [(i, j, s) for i, j, s in pairs if low <= s < high]
        for n, k in enumerate(rng.permutation(len(inside))[:4]):
            i, j, s = inside[k]
            left, right = (Image.open(root / paths[x]).convert("RGB").resize((224, 224)) for x in (i, j))
            both = Image.new("RGB", (452, 224), "white")
            both.paste(left, (0, 0))
            both.paste(right, (228, 0))
            name = f"{low:.2f}_{n}_{paths[i].replace('/', '-')}_{paths[j].replace('/', '-')}_{s:.3f}.png"
            both.save(out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--examples", type=Path, help="folder for side-by-side PNGs of pairs per band")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "neighbours.json")
    parser.add_argument("--threshold", type=float, default=SIMILARITY, help="similarity for the block table")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    dataset = scan_dataset(args.data_dir)
    embeddings = image_embeddings(dataset.root, dataset.paths(),
                                  progress=lambda d, t: print(f"\rembeddings {d}/{t}", end="", flush=True))
    print()
    paths, vectors = list(embeddings.paths), embeddings.vectors
    pairs = similar_pairs(vectors, BANDS[0])
    result = {"kind": "benchmark", "benchmark": "neighbours", "data_dir": str(args.data_dir),
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "images": len(paths),
              "embedding": "efficientnet-lite0 ImageNet, global average of the last feature map, centred, cosine",
              "bands": band_table(paths, pairs), "lag": lag_curve(paths, vectors, rng),
              "blocks": block_table(paths, pairs, args.threshold), "block_threshold": args.threshold}
    result["split_leakage"] = split_leakage_table(dataset.root, args.threshold)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.examples:
        save_examples(dataset.root, paths, pairs, args.examples, rng)
    print(json.dumps({k: result[k] for k in ("bands", "blocks")}, indent=1))
    for row in result["split_leakage"]:
        print(row["split_kind"], "neighbours joined" if row["neighbours_joined"] else "", "groups", row["groups"],
              "largest", row["largest_group"], "crossing: phash", row["phash"]["crossing"], "embedding",
              row["embedding"]["crossing"], row["embedding"]["by_subsets"])
    print("lag:", {k: v for k, v in result["lag"]["mean_cosine_by_lag"].items() if k in (1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 120)},
          "unrelated", result["lag"]["unrelated_same_class"], "p95", result["lag"]["unrelated_p95"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
