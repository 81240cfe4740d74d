"""Occlusion maps (`allx-edge classify --explain`): their cost per field, and whether they point at the cell.

Cost: each field's map is computed twice side by side, with the occluded copies batched (8 per invoke)
and one per invoke, on one interpreter thread, next to one plain classification of the same field;
reported are the invokes and milliseconds per field of each way, their ratio, and the map's cost in
classifications (a ratio that holds on a busy machine, where milliseconds do not).

Sanity on real smears: the held-out TEST images of the model's split (its grouping is recorded), a
stride through each class in file-number order. On the fields the model classifies right, the share of
the map's positive mass (the probability drops) that lies inside the cell, taken from the same file in
the Segmented set (pixels the colour-threshold segmentation kept, small gaps closed), against the share
a uniform map would put there (the cell's share of the field). The ratio of the two means is reported
with a 95% bootstrap interval over fields (neighbouring file numbers are alike, so it is optimistic).
A field whose map is flat (no covered copy moved the int8 probability by one step) has no mass to place and
is counted apart. A last check needs no map: the same field with its segmented cells painted over in
the colour of the rest; if the model still gives the same class, its answer does not rest on the cells.

Shortcut, on every held-out TEST field of the split (no map needed): the model's accuracy on the fields
as they are, on the fields with their segmented cells painted out (background only), and on the Segmented
images themselves (the cells only, on black), each with a 95% Wilson interval and per class. High
background-only accuracy means each class's fields share a background the model recognises (each class
was photographed as its own series), so accuracy on held-out blocks of the same series may overstate
accuracy at a new site.

Usage:
    nice -n 10 python benchmarks/explain.py --model MODEL_DIR --split RUN/split.json \
        --data ../shared/data/all-taleqani/Original --segmented ../shared/data/all-taleqani/Segmented
        [--per-class 12] [--out benchmarks/results/explain.json]
    python benchmarks/explain.py --quick    (cost only: MobileNetV2 int8 built in models/bench/, generated images)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from allx.text import wilson_interval  # noqa: E402
from allx.edge_runner.bench import machine_info  # noqa: E402
from allx.edge_runner.explain import default_method, explain  # noqa: E402
from allx.decision import benign_index, has_benign, sensitivity_specificity  # noqa: E402
from allx.edge_runner.model import BATCH, EdgeModel  # noqa: E402
from allx.train.background_swap import cell_mask, stain_mask, without_cells  # noqa: E402
from allx.files import write_json  # noqa: E402
from benchmarks.edge_throughput import DEFAULT_MODEL, build_default_model, generated_images  # noqa: E402

TARGETS = {"ms_per_field": 1000.0, "mass_ratio": 1.5}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an allx convert folder or .tflite (int8 Lite0 for the targets)")
    parser.add_argument("--split", type=Path, help="the split the model was trained with (its test subset is used)")
    parser.add_argument("--data", type=Path, help="the data folder of the split (Original)")
    parser.add_argument("--segmented", type=Path, help="the Segmented folder with the same file names")
    parser.add_argument("--per-class", type=int, default=12, help="test fields per class, spread by file number")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--no-shortcut", action="store_true", help="skip the background-only / cell-only check")
    parser.add_argument("--quick", action="store_true", help="cost only, default model and 8 generated images")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "explain.json")
    args = parser.parse_args(argv)
    if not args.quick and None in (args.model, args.split, args.data, args.segmented):
        parser.error("give --model, --split, --data and --segmented, or --quick")
    return args


def spread(relpaths: list[str], per_class: int) -> list[str]:
    """`per_class` files of each class folder, evenly spaced through its file-number order."""
    chosen = []
    for label in sorted({path.split("/")[0] for path in relpaths}):
        files = sorted(path for path in relpaths if path.split("/")[0] == label)
        picks = np.linspace(0, len(files) - 1, min(per_class, len(files))).round().astype(int)
        chosen += [files[i] for i in dict.fromkeys(picks)]
    return chosen


def timed(model: EdgeModel, pixels: np.ndarray, batch: int):
    start = time.perf_counter()
    result = explain(model, pixels, batch=batch)
    return result, (time.perf_counter() - start) * 1000.0


def measure_field(model: EdgeModel, pixels: np.ndarray) -> dict:
    """Both ways when the model takes batches, alternating which goes first so neither always meets a warmer
    cache; one way (one copy per invoke) when it does not."""
    order = (BATCH, 1) if np.random.default_rng(int(pixels.sum())).random() < 0.5 else (1, BATCH)
    runs = {batch: timed(model, pixels, batch) for batch in (order if model.takes_batches else (1,))}
    (looped, looped_ms) = runs[1]
    batched, batched_ms = runs.get(BATCH, (looped, None))
    assert np.allclose(batched.heat, looped.heat, atol=2 / 256), "batched and looped maps differ"
    singles = []
    for _ in range(3):  # one plain classification of the same field, timed beside its maps
        start = time.perf_counter()
        model.predict_one(pixels)
        singles.append((time.perf_counter() - start) * 1000.0)
    return {"explanation": batched, "batched_ms": batched_ms, "looped_ms": looped_ms,
            "single_ms": float(np.median(singles)), "batched_invokes": batched.invokes,
            "looped_invokes": looped.invokes}


def bootstrap_ratio(inside: np.ndarray, uniform: np.ndarray, draws: int = 2000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(inside), (draws, len(inside)))
    ratios = inside[picks].mean(axis=1) / uniform[picks].mean(axis=1)
    return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


def cost_summary(rows: list[dict]) -> dict:
    looped, single = np.array([r["looped_ms"] for r in rows]), np.array([r["single_ms"] for r in rows])
    took_batches = rows[0]["batched_ms"] is not None
    batched = np.array([r["batched_ms"] for r in rows]) if took_batches else looped
    return {"fields": len(rows), "copies_per_field": rows[0]["explanation"].copies,
            "batched": None if not took_batches else {
                "invokes_per_field": rows[0]["batched_invokes"], "ms_p50": float(np.median(batched)),
                "ms_mean": float(batched.mean()), "ms_max": float(batched.max())},
            "looped": {"invokes_per_field": rows[0]["looped_invokes"], "ms_p50": float(np.median(looped)),
                       "ms_mean": float(looped.mean()), "ms_max": float(looped.max())},
            "single_ms_p50": float(np.median(single)),
            "speedup_p50": float(np.median(looped) / np.median(batched)) if took_batches else None,
            "field_vs_single_p50": float(np.median(np.minimum(batched, looped) / single))}


def both_masks(args, relpath: str, pixels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(the Segmented set's cell mask, the stain mask of the Original) of one field."""
    return cell_mask(args.segmented / relpath, size), stain_mask(pixels)


def mass_ratio(fields: list[dict], inside_key: str, share_key: str) -> dict:
    """Mean map mass inside the cells over the mean share a uniform map would put there, over the fields
    whose map is not flat (95% bootstrap over fields), and over all fields with a flat map counted as
    uniform (it points nowhere)."""
    fields = [f for f in fields if f[share_key] > 0]
    mapped = [f for f in fields if not f["flat"]]
    if not mapped:
        return {"fields": len(fields), "mapped": 0}
    inside = np.array([f[inside_key] for f in mapped])
    uniform = np.array([f[share_key] for f in mapped])
    everywhere = np.array([f[share_key] if f["flat"] else f[inside_key] for f in fields])
    low, high = bootstrap_ratio(inside, uniform) if len(mapped) > 1 else (None, None)
    return {"fields": len(fields), "mapped": len(mapped), "mass_inside_mean": float(inside.mean()),
            "uniform_mean": float(uniform.mean()), "mass_ratio": float(inside.mean() / uniform.mean()),
            "mass_ratio_interval": [low, high], "fields_above_uniform": int((inside > uniform).sum()),
            "mass_ratio_flat_as_uniform": float(everywhere.mean() / np.mean([f[share_key] for f in fields]))}


def sanity(model: EdgeModel, args, relpaths: list[str]) -> tuple[list[dict], dict]:
    rows, per_field = [], []
    for relpath in relpaths:
        pixels = model.load_pixels(args.data / relpath)
        row = measure_field(model, pixels)
        rows.append(row)
        result, truth = row["explanation"], relpath.split("/")[0]
        segmented, stained = both_masks(args, relpath, pixels, model.input_size)
        without = model.predict_one(without_cells(pixels, segmented | stained))
        per_field.append({"path": relpath, "label": truth, "predicted": result.label, "right": result.label == truth,
                          "probability": round(result.probability, 4),
                          "flat": bool(np.maximum(result.heat, 0).sum() == 0),
                          "cell_share": round(float(segmented.mean()), 4),
                          "mass_inside": round(result.mass_inside(segmented), 4),
                          "stain_share": round(float(stained.mean()), 4),
                          "stain_mass_inside": round(result.mass_inside(stained), 4),
                          "without_cells_same": model.labels[int(np.argmax(without))] == result.label,
                          "without_cells_probability": round(float(without[result.class_index]), 4)})
    right = [f for f in per_field if f["right"]]
    summary = {"fields": len(per_field), "right": len(right), "flat": sum(f["flat"] for f in right),
               **mass_ratio(right, "mass_inside", "cell_share"),
               "stain": mass_ratio(right, "stain_mass_inside", "stain_share"),
               "without_cells_same": sum(f["without_cells_same"] for f in right),
               "without_cells_probability_median": float(np.median([f["without_cells_probability"] for f in right])),
               "per_class": {label: {"right": sum(f["right"] for f in per_field if f["label"] == label),
                                     "fields": sum(f["label"] == label for f in per_field)}
                             for label in sorted({f["label"] for f in per_field})}}
    return rows, {**summary, "per_field": per_field}


def clinical(probabilities: np.ndarray, truths: list[str], labels: list[str], point) -> dict:
    """Malignant sensitivity and benign specificity, each with its counts and 95% Wilson interval: at the
    argmax, and at the model's shipped operating point (`point`; None when it ships none)."""
    truth = np.array([labels.index(t) for t in truths])
    malignant = truth != benign_index(labels)
    sides = {"malignant_sensitivity": int(malignant.sum()), "benign_specificity": int((~malignant).sum())}
    result = {}
    for where, at in (("argmax", None), ("operating_point", point)):
        if where == "operating_point" and point is None:
            continue
        shares = sensitivity_specificity(probabilities, truth, labels, at)
        result[where] = {"threshold": shares["threshold"], **{
            side: None if shares[side] is None else {
                "share": shares[side], "right": int(round(shares[side] * n)), "of": n,
                "interval": list(wilson_interval(shares[side], n))} for side, n in sides.items()}}
    return result


def shortcut(model: EdgeModel, args, relpaths: list[str]) -> dict:
    """Accuracy on each test field as it is, with its cells painted out (both masks), and as the Segmented
    cells alone; malignant sensitivity and benign specificity of the fields as they are."""
    labels = list(model.labels)
    predicted: dict[str, list[str]] = {"original": [], "background_only": [], "cell_only": []}
    truths, no_cell, as_they_are = [], 0, []
    for relpath in relpaths:
        pixels = model.load_pixels(args.data / relpath)
        segmented, stained = both_masks(args, relpath, pixels, model.input_size)
        no_cell += not (segmented | stained).any()
        views = {"original": pixels, "background_only": without_cells(pixels, segmented | stained),
                 "cell_only": model.load_pixels(args.segmented / relpath)}
        for view, image in views.items():
            probabilities = model.predict_one(image)
            predicted[view].append(labels[int(np.argmax(probabilities))])
            if view == "original":
                as_they_are.append(probabilities)
        truths.append(relpath.split("/")[0])
    counts = {label: truths.count(label) for label in labels}
    result = {"fields": len(relpaths), "fields_without_segmented_cell": no_cell,
              "majority_share": max(counts.values()) / len(truths), "class_counts": counts,
              "clinical": clinical(np.array(as_they_are), truths, labels, model.manifest.operating_point)
              if has_benign(labels) else None}
    for view, answers in predicted.items():
        hits = [answer == truth for answer, truth in zip(answers, truths)]
        share = sum(hits) / len(hits)
        result[view] = {"right": sum(hits), "accuracy": share, "interval": list(wilson_interval(share, len(hits))),
                        "per_class": {label: {"right": sum(h for h, t in zip(hits, truths) if t == label),
                                              "fields": counts[label]} for label in labels},
                        "same_as_original": sum(a == o for a, o in zip(answers, predicted["original"])),
                        "predicted_counts": {label: answers.count(label) for label in labels}}
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    command = "python benchmarks/explain.py " + " ".join(argv if argv is not None else sys.argv[1:])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as temp:
        if args.quick:
            model_path = args.model or build_default_model(REPO / DEFAULT_MODEL)
            model = EdgeModel.load(model_path, threads=args.threads)
            rows = [measure_field(model, model.load_pixels(p)) for p in generated_images(Path(temp), 8)]
            maps, split_kind, shortcuts = None, None, None
        else:
            model = EdgeModel.load(args.model, threads=args.threads)
            relpaths = spread(list(json.loads(args.split.read_text())["test"]), args.per_class)
            rows, maps = sanity(model, args, relpaths)
            test = sorted(json.loads(args.split.read_text())["test"])
            shortcuts = None if args.no_shortcut else shortcut(model, args, test)
            split_kind = (model.manifest.document.get("origin") or {}).get("split_kind")
    result = {"benchmark": "explain", "command": command, "created": datetime.datetime.now(datetime.timezone.utc)
              .isoformat(timespec="seconds"), "machine": vars(machine_info()), "model": str(model.model_path),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count(),
              "model_sha256": model.sha256, "precision": model.manifest.precision, "threads": model.threads,
              "input_size": list(model.input_size), "takes_batches": model.takes_batches, "batch": BATCH,
              "method": {"kind": type(default_method(model.input_size)).__name__,
                         **vars(default_method(model.input_size))},
              "split_kind": split_kind, "targets": TARGETS, "cost": cost_summary(rows), "maps": maps,
              "shortcut": shortcuts}
    write_json(args.out, result)
    cost = result["cost"]
    batched = (f"batched {cost['batched']['ms_p50']:.0f} ms p50 ({cost['batched']['invokes_per_field']} invokes), "
               f"{cost['speedup_p50']:.2f}x the speed of " if cost["batched"] else "the model takes no batch: ")
    print(f"{cost['fields']} fields, {cost['copies_per_field']} occluded copies each: {batched}one per invoke "
          f"{cost['looped']['ms_p50']:.0f} ms ({cost['looped']['invokes_per_field']} invokes); a map costs "
          f"{cost['field_vs_single_p50']:.0f}x one classification ({cost['single_ms_p50']:.1f} ms here)")
    if maps:
        print(f"{maps['right']} of {maps['fields']} test fields right, {maps['flat']} of them with a flat map (no "
              f"covered copy moved the probability); on the other {maps['mapped']}, map mass inside the cell "
              f"{maps['mass_inside_mean']:.1%} vs uniform {maps['uniform_mean']:.1%}: {maps['mass_ratio']:.2f}x "
              f"(95% bootstrap {maps['mass_ratio_interval'][0]:.2f}-{maps['mass_ratio_interval'][1]:.2f}); against "
              f"the stain mask {maps['stain']['mass_ratio']:.2f}x; with the "
              f"cells painted over, the same class on {maps['without_cells_same']} of {maps['right']} fields "
              f"(median probability {maps['without_cells_probability_median']:.3f})")
    if shortcuts:
        print(f"shortcut on {shortcuts['fields']} test fields: accuracy "
              + ", ".join(f"{view.replace('_', ' ')} {shortcuts[view]['accuracy']:.1%} ({shortcuts[view]['right']})"
                          for view in ("original", "background_only", "cell_only"))
              + f"; majority class {shortcuts['majority_share']:.1%}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
