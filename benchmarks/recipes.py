"""Benchmark: which training recipe generalizes to new patients? 5-fold block cross-validation of
a frozen backbone (EfficientNet-Lite0 by default) with cached features: plain vs dihedral vs
dihedral+stain, each with and without test-time averaging over the 8 dihedral views (TTA).

    nice -n 10 python benchmarks/recipes.py --data ../shared/data/all-taleqani/Original   # ~1 h on 2 cores
    nice -n 10 python benchmarks/recipes.py --backbone resnet50 --weights none --recipes plain \
        --out benchmarks/results/recipes_resnet50_none.json                           # plain, no TTA
    nice -n 10 python benchmarks/recipes.py --features multiscale --heads logreg --recipes plain \
        --class-weights balanced --out benchmarks/results/heads_lite0_balanced.json   # a head variant
    nice -n 10 python benchmarks/recipes.py --features multiscale --heads logreg --recipes plain \
        --colour-norm per-image --out benchmarks/results/heads_lite0_colournorm.json  # per-image colour norm
    python benchmarks/recipes.py --choose plain.json balanced.json                     # the rule below
    python benchmarks/recipes.py --quick                                                   # generated images

Folds: the data has no patient IDs, but files are numbered in acquisition order and neighbouring numbers
are often views of one field. Fold k holds out the k-th contiguous 20% block of file numbers of every
class (allx.train.folds makes the same kind of folds from `--group-by sequence` groups; this script keeps
its own so the recipes are compared on fixed, equal-size blocks). Inside a fold, the last 15%
block of each class's remaining images is the validation part: early stopping and the operating point
(malignant sensitivity >= 0.99, allx.decision) are chosen there, never on the held-out block.

Features: the backbone (frozen) + global average pooling, i.e. `allx train --backbone BACKBONE --head
gap`, whose head on a pooled vector is exactly Dropout(0.5) -> Dense. Each image's 8 dihedral views and
its 2 stain-jittered views (what `--augment dihedral,stain` adds) are extracted once through
allx.train.view_features (cached under $ALLX_CACHE_DIR); "plain" trains on view 0 only, "dihedral" on the
8 views, "dihedral+stain" on all 10. TTA averages over the 8 clean views.

Heads (`--heads`): "gap" is allx's (Adam, early stopping on the fold's validation block); "logreg" is
allx's logistic head fit (train.logistic.fit_one: standardised features, multinomial logistic regression)
whose inverse regularisation C is chosen among `--c-grid` (default LOGREG_C) by log-loss on the same
validation block (never on the held-out block), then fitted again on train + val with that C, as `allx train`
does (train.logistic; `--no-refit` tests the train-only fit instead). With `--recipes plain` only the image itself is extracted
and there is no TTA row. Extraction goes in interleaved chunks (chunk j of C: every C-th file of each class
from the j-th), each cached on its own: a `--stride 2` run's cache is chunk 0 of a full run's, and an
interrupted run keeps its finished chunks.

Head variants of the logreg head, each one command with its own JSON: `--class-weights balanced` (what
`allx train --class-weights` does: the fold's head and its cross-fitted point both fitted with balanced
class weights), `--c-grid` (the C values tried), `--taps` (a subset of the backbone's multiscale taps: the
cached features' columns of those taps, nothing extracted again), `--colour-norm per-image` (each image's
channels standardised by its own mean and std in front of the backbone's preprocessing,
allx.train.backbones.colour_normalisation; extracted again and cached under a key of its own).
`--choose A.json B.json ...` picks among such runs by a rule fixed before any held-out block is looked at
(choose_variant): the variant with the best mean benign specificity at the cross-fitted point, among those
whose mean malignant sensitivity there is >= 0.99 and whose mean accuracy is at most 0.5 pp below the first
file's (the plain head).
Writes benchmarks/results/recipes.json and prints a Markdown table.
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

import numpy as np

from allx.files import write_json
from allx.text import markdown_table
from allx.train.backbones import COLOUR_NORMS

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "all-taleqani" / "Original"
RECIPES = {"plain": "", "dihedral": "dihedral", "dihedral+stain": "dihedral,stain"}
HEADS = ("gap", "logreg")
LOGREG_C = (0.001, 0.01, 0.03, 0.1, 0.3, 1.0)
FOLDS = 5
VAL_FRACTION = 0.15
TARGET_SENSITIVITY = 0.99
STAIN_COPIES = 2  # `allx train --augment dihedral,stain`'s default: 8 clean views + 2 stain-jittered ones
CLASS_WEIGHTS = ("none", "balanced")
MAX_ACCURACY_LOSS = 0.005  # choose_variant: a variant may cost at most 0.5 pp of mean accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REAL_DATA)
    parser.add_argument("--quick", action="store_true", help="generated 64x64 images instead of real data")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default: allx's)")
    parser.add_argument("--stride", type=int, default=1,
                        help="keep every Nth file of each class in file-number order (2 halves the work; the "
                             "blocks stay contiguous runs of file numbers)")
    parser.add_argument("--chunks", type=int, default=2, help="extract in this many interleaved chunks, each cached")
    parser.add_argument("--backbone", default="efficientnet-lite0", help="a name from allx.train.backbones")
    parser.add_argument("--weights", default="imagenet", help="imagenet | none (random initialisation, seed 0)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated subset of {', '.join(RECIPES)}")
    parser.add_argument("--features", default="last", help="last (the last map, pooled) | multiscale "
                        "(allx.train.backbones.feature_base: pooled middle stages)")
    parser.add_argument("--heads", default="gap", help=f"comma-separated subset of {', '.join(HEADS)}")
    parser.add_argument("--class-weights", default="none", choices=CLASS_WEIGHTS,
                        help="logreg head: balanced = allx train --class-weights (the head and its cross-fitted point)")
    parser.add_argument("--c-grid", default=",".join(map(str, LOGREG_C)),
                        help="logreg head: the C values tried, chosen by log-loss on each fold's validation block")
    parser.add_argument("--taps", default=None, help="--features multiscale: comma-separated subset of the "
                        "backbone's taps fed to the head (default: all of them)")
    parser.add_argument("--no-refit", dest="refit", action="store_false",
                        help="logreg: test the train-only fit that chose C (allx train refits it on train + val)")
    parser.add_argument("--colour-norm", default="none", choices=COLOUR_NORMS,
                        help="per-image: each image's channels standardised by its own mean/std inside the model, "
                             "before the backbone's preprocessing (allx.train.layers.ColourStandardization)")
    parser.add_argument("--choose", type=Path, nargs="+", default=None, metavar="JSON",
                        help="no run: pick among these results by choose_variant's rule (the first is the baseline)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON to write (default: benchmarks/results/recipes.json; with --choose: only printed)")
    args = parser.parse_args()
    if args.choose:
        choice = choose_variant([json.loads(path.read_text()) for path in args.choose], [p.name for p in args.choose])
        choice |= {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "command": " ".join(["python benchmarks/recipes.py", *sys.argv[1:]])}
        if args.out:
            write_json(args.out, choice)
        print(json.dumps(choice, indent=2))
        return
    args.out = args.out or REPO / "benchmarks" / "results" / "recipes.json"
    try:
        args.c_grid = tuple(float(c) for c in args.c_grid.split(",") if c.strip())
    except ValueError:
        parser.error(f"--c-grid: got {args.c_grid!r}, expected comma-separated positive numbers")
    if not args.c_grid or min(args.c_grid) <= 0:
        parser.error(f"--c-grid: got {args.c_grid}, expected comma-separated positive numbers")
    if args.taps is not None and args.features != "multiscale":
        parser.error(f"--taps: got --features {args.features}, expected --features multiscale")
    args.recipes = [name.strip() for name in args.recipes.split(",") if name.strip()]
    if not args.recipes or any(name not in RECIPES for name in args.recipes):
        parser.error(f"--recipes: got {args.recipes}, expected a subset of {', '.join(RECIPES)}")
    args.heads = [name.strip() for name in args.heads.split(",") if name.strip()]
    if not args.heads or any(name not in HEADS for name in args.heads):
        parser.error(f"--heads: got {args.heads}, expected a subset of {', '.join(HEADS)}")
    if args.quick:
        from allx.synthetic import make_dataset

        args.data = make_dataset(Path(tempfile.mkdtemp(prefix="allx-recipes-")) / "data", per_class=20, size=64)
        args.epochs = min(args.epochs, 5)

    import keras

    from allx.train.dataset import scan_dataset

    keras.utils.set_random_seed(0)
    dataset = scan_dataset(args.data)
    relpaths, labels = ordered_items(dataset, args.stride)
    folds = block_folds(labels, FOLDS)
    started = time.perf_counter()
    views = extract_in_chunks(args, dataset, relpaths)
    if args.taps is not None:
        views = {name: v[..., tap_columns(args.backbone, args.taps)] for name, v in views.items()}
    extract_s = time.perf_counter() - started
    results = {(name, head): [run_fold(args, dataset.classes, views, name, labels, fold, head) for fold in folds]
               for name in args.recipes for head in args.heads}
    document = with_markdown(summarise(args, dataset, results, extract_s, time.perf_counter() - started))
    write_json(args.out, document)
    print(markdown(document))


def file_number(relpath: str) -> tuple:
    """Sort key in acquisition order (the project's one file-number rule, train.groups.file_order)."""
    from allx.train.groups import file_order

    return file_order(relpath)


def ordered_items(dataset, stride: int = 1, offset: int = 0) -> tuple[list[str], np.ndarray]:
    """Paths grouped by class, each class in file-number order (every `stride`-th file of it from `offset`)."""
    items = []
    for label in range(len(dataset.classes)):
        of_class = sorted((item for item in dataset.items if item[1] == label), key=lambda item: file_number(item[0]))
        items += of_class[offset::stride]
    return [path for path, _ in items], np.array([label for _, label in items])


def block_folds(labels: np.ndarray, k: int) -> list[dict]:
    """Fold i: test = the i-th contiguous 1/k block of each class; val = the last VAL_FRACTION of the rest."""
    folds = []
    for i in range(k):
        test, val, train = [], [], []
        for label in np.unique(labels):
            rows = np.flatnonzero(labels == label)  # already in file-number order
            blocks = np.array_split(rows, k)
            rest = np.concatenate([b for j, b in enumerate(blocks) if j != i])
            n_val = max(1, int(round(VAL_FRACTION * len(rest))))
            test += list(blocks[i])
            val += list(rest[-n_val:])
            train += list(rest[:-n_val])
        folds.append({"fold": i, "train": np.array(train), "val": np.array(val), "test": np.array(test)})
    return folds


def extract_in_chunks(args, dataset, relpaths) -> dict:
    """extract_all over the interleaved chunks of the stride's files, put back in `relpaths` order."""
    which = ("clean", "stain") if "dihedral+stain" in args.recipes else ("clean",)
    if args.recipes == ["plain"]:
        which = ("single",)
    row_of, parts = {}, []
    for j in range(args.chunks):
        chunk_paths, chunk_labels = ordered_items(dataset, args.stride * args.chunks, args.stride * j)
        if chunk_paths:
            parts.append(extract_all(args, dataset, chunk_paths, chunk_labels, which))
            row_of.update({path: (len(parts) - 1, k) for k, path in enumerate(chunk_paths)})
    order = [row_of[path] for path in relpaths]
    return {name: np.stack([parts[part][name][k] for part, k in order]) for name in which}


def extract_all(args, dataset, relpaths, labels, which=("clean", "stain")) -> dict:
    """Pooled features, (images, views, d): the 8 clean dihedral views ("clean"), the stain-jittered copies
    ("stain"), or the image itself ("single")."""
    import keras

    from allx.train.augment import parse_augmentation
    from allx.train.backbones import colour_normalisation, feature_base, get_backbone
    from allx.train.dataset import data_fingerprint
    from allx.train.features import cache_key, default_cache_dir
    from allx.train.view_features import extract_view_features

    backbone = get_backbone(args.backbone)
    size = (64, 64) if args.quick else tuple(backbone.input_size)
    pixels = keras.Input(shape=(*size, 3))
    keras.utils.set_random_seed(0)  # --weights none: the same random base for every chunk
    base = feature_base(backbone, args.weights, (*size, 3), args.features)
    base.trainable = False
    normalise = colour_normalisation(args.colour_norm)
    x = normalise(pixels) if normalise is not None else pixels
    pooled = keras.layers.GlobalAveragePooling2D()(base(backbone.make_preprocessing()(x), training=False))
    extractor = keras.Model(pixels, pooled)  # (multiscale: a (1, 1, D) map, so the pooling is the identity)
    cache_dir = args.cache_dir or default_cache_dir()
    fingerprint = data_fingerprint(args.data, relpaths)
    out = {}
    # the clean views once; of `dihedral,stain` only the jittered copies (views 8..), the rest is the same
    for name, text, first_view in (("clean", "dihedral", 0), ("stain", "dihedral,stain", 8), ("single", "", 0)):
        if name not in which:
            continue
        augmentation = parse_augmentation(text, STAIN_COPIES)
        key = cache_key(feature_key_parts(args, backbone, fingerprint, size, augmentation.key(), first_view))
        last = [0.0]

        def report(done, total, name=name):
            if time.perf_counter() - last[0] > 30 or done == total:
                last[0] = time.perf_counter()
                print(f"features {name}: {done}/{total} images", file=sys.stderr, flush=True)

        features = extract_view_features(extractor, args.data, relpaths, labels, size, augmentation,
                                         cache_dir / f"{key}.npy", seed=0, progress=report, first_view=first_view)
        views = augmentation.views_per_image - first_view
        if len(features.paths) != len(relpaths) * views:
            raise SystemExit(f"{len(features.skipped)} images unreadable; fix the data first")
        out[name] = np.asarray(features.features, dtype=np.float32).reshape(len(relpaths), views, -1)
    return out


def feature_key_parts(args, backbone, fingerprint: str, size, augmentation: str, first_view: int = 0) -> dict:
    """What the cached features depend on. "colour_norm" is there only when one is used, so the features
    cached before the option existed (and every run without it) keep their key."""
    pooling = "gap" if args.features == "last" else f"{args.features}:{','.join(backbone.taps)}"
    parts = {"data": fingerprint, "backbone": f"{args.backbone}+{pooling}", "weights": args.weights,
             "size": list(size), "augment": augmentation, "format": 1}
    if args.colour_norm != "none":
        parts["colour_norm"] = args.colour_norm
    return {**parts, "first_view": first_view} if first_view else parts


def run_fold(args, classes, views, recipe, labels, fold, head_kind: str = "gap") -> dict:
    """Train a head for one recipe on one fold; test metrics without and with TTA. For the logreg head also
    at the cross-fitted operating point `allx train` ships (train.crossfit, see crossfit_point)."""
    from allx.decision import benign_index, choose_operating_point, sensitivity_specificity

    clean = views["clean"] if "clean" in views else views["single"]
    train_x, train_y = training_views(views, recipe, labels, fold["train"])
    fit = fit_logreg if head_kind == "logreg" else fit_head
    head, chosen = fit(args, train_x, train_y, clean[fold["val"], 0], labels[fold["val"]], len(classes))
    weighted = head_kind == "logreg" and args.class_weights == "balanced"
    result = {"fold": fold["fold"], "n_train": int(len(fold["train"])), "n_test": int(len(fold["test"])),
              "n_benign_test": int((labels[fold["test"]] == benign_index(classes)).sum()), "chosen_on_val": chosen}
    for tta in (False, True) if clean.shape[1] > 1 else (False,):
        val_p = predict(head, clean[fold["val"]], tta)
        test_p = predict(head, clean[fold["test"]], tta)
        truth = labels[fold["test"]]
        point = choose_operating_point(val_p, labels[fold["val"]], classes, TARGET_SENSITIVITY, "val")
        at_point = sensitivity_specificity(test_p, truth, classes, point)
        oracle = choose_operating_point(test_p, truth, classes, TARGET_SENSITIVITY, "test")
        argmax = sensitivity_specificity(test_p, truth, classes)
        result["tta" if tta else "single"] = {
            "accuracy": float((test_p.argmax(1) == truth).mean()),
            "sensitivity_argmax": argmax["malignant_sensitivity"], "specificity_argmax": argmax["benign_specificity"],
            "sensitivity_at_val_point": at_point["malignant_sensitivity"],
            "specificity_at_val_point": at_point["benign_specificity"],
            "specificity_at_test_sens99": oracle.specificity}
        if head_kind == "logreg":
            crossfit = crossfit_point(views, recipe, labels, fold, classes, chosen["C"], tta, 4 if args.quick else None,
                                      weighted)
            at_crossfit = sensitivity_specificity(test_p, truth, classes, crossfit)
            result["tta" if tta else "single"] |= {
                "sensitivity_at_crossfit_point": at_crossfit["malignant_sensitivity"],
                "specificity_at_crossfit_point": at_crossfit["benign_specificity"]}
    return result


def training_views(views, recipe, labels, rows) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's training rows of `rows`' images: (images * views, d) features and their labels."""
    clean = views["clean"] if "clean" in views else views["single"]
    x = {"plain": lambda: clean[rows, :1], "dihedral": lambda: clean[rows],
         "dihedral+stain": lambda: np.concatenate([clean[rows], views["stain"][rows]], axis=1)}[recipe]()
    return x.reshape(-1, x.shape[-1]), np.repeat(labels[rows], x.shape[1])


def crossfit_point(views, recipe, labels, fold, classes, c: float, tta: bool, block_size: int | None = None,
                   balanced: bool = False):
    """allx train's rule (train.crossfit): out-of-group predictions of the fold's train and val images (5
    grouped folds over blocks of `block_size`, default DEFAULT_BLOCK_SIZE, consecutive file numbers per class),
    threshold reaching the target with 95% confidence. `balanced`: the inner heads are fitted with the
    balanced class weights of those images, as `allx train --class-weights` does (train.trainer)."""
    from allx.train.crossfit import INNER_FOLDS, crossfitted_point, crossfitted_probabilities
    from allx.train.groups import DEFAULT_BLOCK_SIZE
    from allx.train.trainer import balanced_class_weights

    clean = views["clean"] if "clean" in views else views["single"]
    rest = np.sort(np.concatenate([fold["train"], fold["val"]]))
    rank = {row: k for label in np.unique(labels) for k, row in enumerate(np.flatnonzero(labels == label))}
    groups = [f"{labels[row]}#{rank[row] // (block_size or DEFAULT_BLOCK_SIZE)}" for row in rest]
    x, _ = training_views(views, recipe, labels, rest)
    per_image = x.shape[0] // len(rest)
    view_rows = [range(k * per_image, (k + 1) * per_image) for k in range(len(rest))]
    weights = balanced_class_weights(labels[rest], len(classes)) if balanced else None
    if tta:  # the held-out images read as the mean over their 8 clean views: score each view, then average
        probabilities = np.mean([crossfitted_probabilities(
            np.concatenate([x, clean[rest, v]]), [len(x) + k for k in range(len(rest))], view_rows, labels[rest],
            groups, c, len(classes), class_weights=weights) for v in range(clean.shape[1])], axis=0)
    else:
        probabilities = crossfitted_probabilities(np.concatenate([x, clean[rest, 0]]),
                                                  [len(x) + k for k in range(len(rest))], view_rows, labels[rest],
                                                  groups, c, len(classes), class_weights=weights)
    return crossfitted_point(probabilities, labels[rest], classes, TARGET_SENSITIVITY, "fold train+val", INNER_FOLDS)


def fit_head(args, x, y, val_x, val_y, n_classes):
    """allx's gap head (Dropout 0.5 -> Dense softmax) on pooled features; early stopping on val loss."""
    import keras

    from allx.train.head import build_head

    head = build_head((1, 1, x.shape[-1]), n_classes, "gap")
    head.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss="categorical_crossentropy")
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    head.fit(x.reshape(-1, 1, 1, x.shape[-1]), keras.utils.to_categorical(y, n_classes),
             validation_data=(val_x.reshape(-1, 1, 1, x.shape[-1]), keras.utils.to_categorical(val_y, n_classes)),
             epochs=args.epochs, batch_size=args.batch_size, shuffle=True, callbacks=[stop], verbose=0)
    return head, {"epochs": len(head.history.history["loss"]) if head.history else None}


class LogisticHead:
    """A fitted logistic head (train.logistic.Fitted) behind the `predict` the gap head offers."""

    def __init__(self, fitted, n_classes: int):
        self.fitted, self.n_classes = fitted, n_classes

    def predict(self, x, batch_size=None, verbose=0):
        from allx.train.logistic import predict

        return predict(self.fitted, x.reshape(len(x), -1), self.n_classes)


def fit_logreg(args, x, y, val_x, val_y, n_classes):
    """allx's logistic head fit (train.logistic.fit_one, with `--class-weights`) for each C of `--c-grid`;
    the C with the lowest log-loss on the fold's val block is kept."""
    from sklearn.metrics import log_loss

    from allx.train.logistic import fit_one
    from allx.train.trainer import balanced_class_weights

    weights = balanced_class_weights(y, n_classes) if args.class_weights == "balanced" else None
    best = None
    for c in args.c_grid:
        head = LogisticHead(fit_one(x, y, c, weights), n_classes)
        loss = log_loss(val_y, head.predict(val_x), labels=list(range(n_classes)))
        if best is None or loss < best[0]:
            best = (loss, c, head)
    chosen = {"C": best[1], "val_log_loss": round(float(best[0]), 4)}
    if args.refit:  # as allx train does (train.logistic): the chosen C fitted again on train + val
        return LogisticHead(fit_one(np.concatenate([x, val_x]), np.concatenate([y, val_y]), best[1], weights),
                            n_classes), chosen | {"fitted_on": "train+val"}
    return best[2], chosen


def tap_columns(backbone_name: str, taps: str) -> np.ndarray:
    """The columns of multiscale features (the taps' pooled channels, concatenated in registry order)
    that belong to the named subset of the backbone's taps."""
    from allx.train.backbones import feature_base, get_backbone

    backbone = get_backbone(backbone_name)
    names = [name.strip() for name in taps.split(",") if name.strip()]
    if not names or any(name not in backbone.taps for name in names):
        raise SystemExit(f"--taps: got {names}, expected a subset of {', '.join(backbone.taps)}")
    base = feature_base(backbone, "none", (64, 64, 3), "multiscale")  # only its shapes are read
    edges = np.cumsum([0, *(base.get_layer(f"pool_{tap}").output.shape[-1] for tap in backbone.taps)])
    return np.concatenate([np.arange(edges[k], edges[k + 1]) for k, tap in enumerate(backbone.taps) if tap in names])


def choose_variant(documents: list[dict], names: list[str]) -> dict:
    """The rule, fixed before the held-out block is looked at: among the runs' logreg rows without TTA, the
    best mean benign specificity at the cross-fitted point whose mean malignant sensitivity there is
    >= TARGET_SENSITIVITY and whose mean accuracy is at most MAX_ACCURACY_LOSS below the first run's
    (the baseline). Returns every candidate's figures, whether it qualified, and the chosen name."""
    candidates = []
    for name, document in zip(names, documents):
        row = next(r for r in document["rows"] if r["head"] == "logreg" and not r["tta"])
        mean, worst = row["mean"], row["worst_fold"]
        candidates.append({"name": name, "variant": document.get("variant", {}), "command": document.get("command"),
                           "backbone": document.get("backbone"), "images": document.get("images"),
                           "accuracy": mean["accuracy"], "worst_accuracy": worst["accuracy"],
                           "sensitivity": mean["sensitivity_at_crossfit_point"],
                           "worst_sensitivity": worst["sensitivity_at_crossfit_point"],
                           "specificity": mean["specificity_at_crossfit_point"],
                           "worst_specificity": worst["specificity_at_crossfit_point"]})
    baseline = candidates[0]["accuracy"]
    for candidate in candidates:
        candidate["qualifies"] = bool(candidate["sensitivity"] >= TARGET_SENSITIVITY
                                      and candidate["accuracy"] >= baseline - MAX_ACCURACY_LOSS - 1e-12)
    qualified = [c for c in candidates if c["qualifies"]]
    chosen = max(qualified, key=lambda c: c["specificity"])["name"] if qualified else None
    rule = (f"among the head variants' logreg rows (no TTA), the best mean benign specificity at the cross-fitted "
            f"point, of those whose mean malignant sensitivity there is >= {TARGET_SENSITIVITY} and whose mean "
            f"accuracy is at most {MAX_ACCURACY_LOSS * 100:.1f} pp below the baseline's (the plain head); fixed before "
            "any held-out block was looked at")
    return {"kind": "recipes-choice", "rule": rule,
            "candidates": candidates, "chosen": chosen}


def predict(head, image_views: np.ndarray, tta: bool) -> np.ndarray:
    """(images, 8, d) -> (images, classes): view 0 alone, or the mean over the 8 views."""
    chosen = image_views if tta else image_views[:, :1]
    n, v, d = chosen.shape
    probabilities = head.predict(chosen.reshape(n * v, 1, 1, d), batch_size=1024, verbose=0)
    return probabilities.reshape(n, v, -1).mean(axis=1)


def summarise(args, dataset, results, extract_s, total_s) -> dict:
    rows = []
    for (recipe, head), folds in results.items():
        for mode in ("single", "tta") if "tta" in folds[0] else ("single",):
            per_fold = [f[mode] for f in folds]
            mean = {key: float(np.mean([f[key] for f in per_fold])) for key in per_fold[0]}
            worst = {key: float(np.min([f[key] for f in per_fold])) for key in per_fold[0]}
            rows.append({"recipe": recipe, "head": head, "tta": mode == "tta", "mean": mean, "worst_fold": worst,
                         "folds": per_fold, "chosen_on_val": [f["chosen_on_val"] for f in folds],
                         "n_benign_test": [f["n_benign_test"] for f in folds]})
    # The recipe to ship: best mean benign specificity at malignant sensitivity 0.99, then accuracy.
    best = max(rows, key=lambda r: (round(r["mean"]["specificity_at_test_sens99"], 3), r["mean"]["accuracy"]))
    return {"kind": "recipes-cv", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python benchmarks/recipes.py", *sys.argv[1:]]),
            "data": str(args.data), "quick": args.quick, "stride": args.stride,
            "images": sum(f["n_test"] for f in next(iter(results.values()))), "images_in_data": len(dataset.items),
            "classes": list(dataset.classes), "backbone": args.backbone, "weights": args.weights,
            "features": args.features, "heads": args.heads, "folds": FOLDS,
            "variant": {"refit": args.refit, "class_weights": args.class_weights, "c_grid": list(args.c_grid),
                        "taps": args.taps.split(",") if args.taps else None, "colour_norm": args.colour_norm},
            "fold_kind": "block", "target_sensitivity": TARGET_SENSITIVITY,
            "epochs": args.epochs, "learning_rate": args.learning_rate, "batch_size": args.batch_size,
            "machine": f"{platform.machine()}, {platform.python_version()}",
            "extract_s": round(extract_s, 1), "total_s": round(total_s, 1),
            "best": {"recipe": best["recipe"], "head": best["head"], "tta": best["tta"]}, "rows": rows}


def with_markdown(document: dict) -> dict:
    return {**document, "markdown": markdown(document)}


# (metric key, column title), each shown as "mean / worst fold"; a key a document lacks shows as "-"
RECIPE_METRICS = (("accuracy", "accuracy"), ("specificity_at_val_point", "benign spec. at val point"),
                  ("sensitivity_at_val_point", "malignant sens. at val point"),
                  ("specificity_at_test_sens99", "benign spec. at test sens 0.99"),
                  ("sensitivity_at_crossfit_point", "malignant sens. at cross-fitted point"),
                  ("specificity_at_crossfit_point", "benign spec. at cross-fitted point"))


def markdown(document: dict) -> str:
    header = ("recipe", "head", "TTA", *(f"{title} (mean / worst)" for _, title in RECIPE_METRICS))
    rows = ((r["recipe"], r.get("head", "gap"), "yes" if r["tta"] else "no",
             *(f"{r['mean'][key]:.3f} / {r['worst_fold'][key]:.3f}" if key in r["mean"] else "-"
               for key, _ in RECIPE_METRICS)) for r in document["rows"])
    variant = document.get("variant") or {}
    lines = [f"Head variant: class weights {variant.get('class_weights', 'none')}, C grid "
             f"{', '.join(map(str, variant.get('c_grid', LOGREG_C)))}, taps {', '.join(variant.get('taps') or ['all'])}, "
             f"colour norm {variant.get('colour_norm', 'none')}, logreg head "
             + ("refitted on train + val" if variant.get("refit") else "fitted on train only"),
             "", *markdown_table(header, rows, right=range(3, len(header)))]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
