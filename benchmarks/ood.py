"""Out-of-distribution methods compared on the int8 model through allx-edge: the fraction flagged per data set.

For each model: int8 conversions (the plain classifier, and one with two extra outputs, the pooled
embedding and the logits) with the representative draw `allx convert` uses; every score is computed
from what edge_runner.EdgeModel reads out of the int8 model. Methods: max-softmax (1 - max p),
energy (-logsumexp of the logits) and Mahalanobis distance on the pooled embedding with k principal
axes; each fitted on train and thresholded on val to flag --flag-rate of it, exactly as
convert/ood.py does. Then the shipped path: `allx convert` (library call, --ood on) writes a model
folder, and `allx-edge`'s EdgeModel.classify marks the images: those are the rates the device gives.
The int8 probabilities of the plain and the shipped model are compared on the test subset. Each model's
record says how its run's split was grouped (split_kind: the val subset the threshold is set on and the
test subset measured are grouped alike) and whether the shipped rates meet the targets: at most 5% of
the in-distribution test subset flagged, at least 90% of another lab's images.

Usage:
    python benchmarks/ood.py --quick
        generated 4-class images, a tiny model of the `allx train` layout trained here, recoloured
        copies of the images standing in for another lab (tests the script)
    python benchmarks/ood.py RUN/model.keras [RUN2/model.keras ...] --out models/ood
        [--ood-dir ../shared/data/pbc-lymphocytes] [--components 8,16,32,64,128,256] [--flag-rate 0.04]
        [--name ood.json]
Writes OUT/NAME (default OUT/ood.json) (with the Markdown tables it prints; benchmarks/readme_results.py reads
benchmarks/results/ood.json) and keeps the shipped model folders under --models-dir.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from allx import layout
from allx.errors import AllxError  # noqa: E402
from allx.files import write_atomic  # noqa: E402
from allx.convert.modes import DEFAULT_FLAG_RATE  # noqa: E402
from allx.text import markdown_table  # noqa: E402

PBC = REPO.parent / "shared" / "data" / "pbc-lymphocytes"
TARGET_TEST_FLAGGED = 0.05  # at most this share of in-distribution test images called "unlike training"
TARGET_OTHER_LAB_FLAGGED = 0.90  # at least this share of another lab's images


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, help="MODEL.keras files from `allx train` (omit with --quick)")
    parser.add_argument("--quick", action="store_true", help="generated data and a tiny model trained here")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "ood", help="folder for ood.json")
    parser.add_argument("--models-dir", type=Path, default=REPO / "models" / "ood",
                        help="where the shipped (allx convert --ood) model folders go, one per run folder name")
    parser.add_argument("--ood-dir", type=Path, default=PBC if PBC.is_dir() else None,
                        help="images from another lab (default: ../shared/data/pbc-lymphocytes when present)")
    parser.add_argument("--components", default="8,16,32,64,128,256", help="Mahalanobis principal axes to compare")
    parser.add_argument("--flag-rate", type=float, default=DEFAULT_FLAG_RATE, help="fraction of in-distribution images flagged (train+val out of group for Mahalanobis, val for the others)")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (default: all cores)")
    parser.add_argument("--name", default="ood.json", help="file name of the results in --out")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if bool(args.models) == args.quick:
        parser.error("give MODEL.keras files or --quick (one of them)")
    return args


def make_quick_run(folder: Path) -> tuple[Path, Path]:
    """(model.keras of a run folder like `allx train` writes, a folder of recoloured images as 'another lab')."""
    import keras
    from PIL import Image

    from allx.images import load_image
    from allx.synthetic import CLASSES, make_dataset
    from allx.train.head import build_head
    from allx.train.split import Split, write_split

    data = make_dataset(folder / "data", per_class=24, size=48, seed=1)
    paths = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.jpg"))
    subsets = {name: tuple(p for i, p in enumerate(paths) if i % 24 in rows)
               for name, rows in (("train", range(0, 14)), ("val", range(14, 19)), ("test", range(19, 24)))}
    run = folder / "run"
    run.mkdir()
    write_split(Split(CLASSES, *subsets.values(), {"data_dir": str(data.resolve())}), run / layout.SPLIT)
    (run / layout.LABELS).write_text("\n".join(CLASSES) + "\n")
    other_lab = folder / "other_lab"
    other_lab.mkdir()
    for path in subsets["test"]:  # a different stain: colour channels swapped
        Image.fromarray(load_image(data / path, (48, 48))[..., ::-1]).save(other_lab / path.replace("/", "_"))
    keras.utils.set_random_seed(0)
    base_input = keras.Input((48, 48, 3))
    x = keras.layers.MaxPooling2D()(keras.layers.Conv2D(16, 3, activation="relu")(base_input))
    backbone = keras.Model(base_input, keras.layers.Conv2D(24, 3, activation="relu")(x), name="backbone")
    pixels = keras.Input((48, 48, 3), name="pixels")
    feature_map = backbone(keras.layers.Rescaling(1 / 127.5, offset=-1.0)(pixels))
    model = keras.Model(pixels, build_head(backbone.output_shape[1:], 4, "gap", dropout=0.0)(feature_map))
    train = np.stack([load_image(data / p, (48, 48)) for p in subsets["train"]]).astype(np.float32)
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(train, np.array([CLASSES.index(p.split("/")[0]) for p in subsets["train"]]), epochs=30, verbose=0)
    model.save(run / layout.MODEL_KERAS)
    return run / layout.MODEL_KERAS, other_lab


def measurement_model(model):
    """The classifier with the pooled embedding (as shipped) and the head's logits (for the energy score)."""
    import keras

    from allx.convert.embedding import with_embedding

    two = with_embedding(model)
    if two is None:
        raise AllxError(f"{model.name}: no nested 'head' on a feature map, expected the `allx train` layout")
    head = model.get_layer("head")
    x = head.input
    for layer in head.layers[:-1]:
        x = layer(x)
    dense = head.layers[-1]
    linear = keras.layers.Dense(dense.units, name="logits")
    logits = linear(x)
    linear.set_weights(dense.get_weights())
    return keras.Model(model.input, [*two.outputs, logits])


def convert_int8(keras_model, source, log: Path) -> bytes:
    """int8 with uint8 IO and the representative draw of `allx convert`'s defaults."""
    from allx.convert.modes import DEFAULT_REPRESENTATIVE_COUNT, MODES
    from allx.convert.representative import calibration_batches, draw_representative, load_representative
    from allx.convert.tflite import convert_model, saved_model_of

    relpaths = draw_representative(source.split, min(DEFAULT_REPRESENTATIVE_COUNT, len(source.split.train)))
    pixels = load_representative(source.data_dir, relpaths, source.input_size)
    with saved_model_of(keras_model, source.input_size) as saved:
        return convert_model(saved, MODES["int8"], "uint8", log, calibration_batches(pixels))


def load_measured(tflite: bytes, labels, folder: Path, threads):
    """EdgeModel of the three-output model (probabilities, embedding named in a manifest) and the logits tensor."""
    from allx.edge_runner.model import EdgeModel
    from allx.edge_runner.runtime import find_runtime

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "measure.tflite").write_bytes(tflite)
    interpreter = find_runtime().module.Interpreter(model_content=tflite)
    by_index = {d["index"]: d["name"] for d in interpreter.get_output_details()}
    names = {key: by_index[d["index"]] for key, d in interpreter.get_signature_runner().get_output_details().items()}
    (folder / layout.MANIFEST).write_text(json.dumps({"model_file": "measure.tflite", "labels": list(labels), "outputs": {
        "probabilities": {"name": names["output_0"]}, "embedding": {"name": names["output_1"]}}}))
    model = EdgeModel.load(folder, threads=threads)
    logits = next(d for d in model.interpreter.get_output_details() if d["name"] == names["output_2"])
    return model, logits


def outputs_of(model, logits_detail, images) -> dict[str, np.ndarray]:
    from allx.edge_runner.quant import dequantize, tensor_quantization

    scale, zero_point = tensor_quantization(logits_detail)
    rows = {"p": [], "e": [], "l": []}
    for pixels in images:
        model.set_input(pixels)
        model.invoke()
        rows["p"].append(model.read_probabilities().copy())
        rows["e"].append(model.read_embedding().copy())
        rows["l"].append(dequantize(model.interpreter.get_tensor(logits_detail["index"])[0], scale, zero_point))
    return {key: np.stack(value) for key, value in rows.items()}


def image_sets(source, ood_dir: Path | None, seed: int = 0) -> dict:
    """name -> (list of items, loader): the split's subsets, another lab, blurred test images, generated groups."""
    from PIL import Image, ImageFilter

    from allx.images import load_image, resize_rgb
    from allx.convert.ood_images import make_non_smear_images

    size = source.input_size
    from_data = lambda relpath: load_image(source.data_dir / relpath, size)  # noqa: E731
    blurred = lambda relpath: np.asarray(resize_rgb(  # noqa: E731
        Image.open(source.data_dir / relpath).convert("RGB").filter(ImageFilter.GaussianBlur(4)), size))
    test = source.split.test or source.split.val
    sets = {name: (list(source.split.subset(name)), from_data) for name in ("train", "val", "test")
            if source.split.subset(name)}
    if ood_dir is not None:
        from allx.images import is_image_file

        sets["other_lab"] = (sorted(p for p in Path(ood_dir).rglob("*") if is_image_file(p)),
                             lambda path: load_image(path, size))
    sets["blurred_test"] = (list(test), blurred)
    for name, images in make_non_smear_images(size, seed).items():
        sets[f"generated_{name}"] = (list(images), lambda pixels: pixels)
    return sets


def measure_sets(model, logits_detail, sets: dict) -> dict[str, dict[str, np.ndarray]]:
    measured = {}
    for name, (items, load) in sets.items():
        began = time.perf_counter()
        measured[name] = outputs_of(model, logits_detail, (load(item) for item in items))
        print(f"  {name}: {len(items)} images, {time.perf_counter() - began:.0f} s", file=sys.stderr)
    return measured


def method_scores(measured: dict, split, components: list[int]) -> dict[str, dict[str, np.ndarray]]:
    """method -> set -> scores (higher = stranger), all from the int8 model's outputs. Mahalanobis is fitted
    as `allx convert` fits it: on train+val, its threshold set on their out-of-group scores ("threshold_on")."""
    from allx.convert.ood import out_of_group_scores
    from allx.convert.operating import split_groups
    from allx.convert.out_of_group import TrainVal, groups_for, make_folds
    from allx.edge_runner.ood import mahalanobis_scores, max_softmax_scores

    def energy(logits):
        top = logits.max(axis=1)
        return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))

    methods = {"max_softmax": {name: max_softmax_scores(m["p"]) for name, m in measured.items()},
               "energy": {name: energy(m["l"]) for name, m in measured.items()}}
    paths = [*split.train, *split.val]
    order = np.argsort(paths, kind="stable")  # convert reads train+val in sorted order: the same folds
    paths = [paths[i] for i in order]
    labels = np.concatenate([split.labels("train"), split.labels("val")])[order]
    embeddings = np.concatenate([measured["train"]["e"], measured["val"]["e"]])[order]
    groups, grouping = groups_for(paths, split_groups(split))
    folds = make_folds(paths, labels, groups, grouping)
    for k in components:
        out_of_group, stats = out_of_group_scores(TrainVal(folds, embeddings, ()), k)
        methods[f"mahalanobis_k{stats.projection.shape[1]}"] = {
            **{name: mahalanobis_scores(m["e"], stats) for name, m in measured.items()}, "threshold_on": out_of_group}
    return methods


def rates_of(methods: dict, flag_rate: float) -> dict[str, dict]:
    """method -> threshold (flags flag_rate of its "threshold_on" scores, else of val) and the fraction
    flagged in every set but train."""
    from allx.convert.ood_stats import threshold_for

    rows = {}
    for method, scores in methods.items():
        threshold = threshold_for(scores.get("threshold_on", scores["val"]), flag_rate)
        rows[method] = {"threshold": threshold, "rates": {name: float(np.mean(values > threshold))
                                                          for name, values in scores.items()
                                                          if name not in ("train", "threshold_on")}}
    return rows


def agreement(reference: np.ndarray, other: np.ndarray, truth: np.ndarray) -> dict:
    return {"images": len(truth), "accuracy_plain": float(np.mean(reference.argmax(1) == truth)),
            "accuracy_with_ood_outputs": float(np.mean(other.argmax(1) == truth)),
            "top1_agreement": float(np.mean(reference.argmax(1) == other.argmax(1))),
            "max_abs_probability_difference": float(np.abs(reference - other).max())}


def measure_model(model_path: Path, args, scratch: Path) -> dict:
    """Every method's rates for one model, the shipped path's rates, and the accuracy comparison."""
    from allx.convert.source import load_source
    from allx.edge_runner.model import EdgeModel

    source = load_source(model_path)
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"{model_path}: converting (plain and with the extra outputs) ...", file=sys.stderr)
    plain = convert_int8(source.model, source, scratch / "log.txt")
    measured_bytes = convert_int8(measurement_model(source.model), source, scratch / "log.txt")
    model, logits = load_measured(measured_bytes, source.labels, scratch / "measure", args.threads)
    sets = image_sets(source, args.ood_dir)
    measured = measure_sets(model, logits, sets)
    components = [int(k) for k in args.components.split(",")]
    rows = rates_of(method_scores(measured, source.split, components), args.flag_rate)
    (scratch / "plain.tflite").write_bytes(plain)
    reference = EdgeModel.load(scratch / "plain.tflite", labels=source.labels, threads=args.threads)
    test_name = "test" if source.split.test else "val"
    items, load = sets[test_name]
    plain_probabilities = np.stack([reference.predict(load(item)) for item in items])
    truth = np.asarray(source.split.labels(test_name))
    document = {"model": str(model_path), "split_kind": source.split.kind.value, "input_size": list(source.input_size),
                "embedding_size": int(measured["val"]["e"].shape[1]),
                "images": {name: len(items) for name, (items, _) in sets.items()}, "flag_rate": args.flag_rate,
                "methods": rows, "accuracy": {"subset": test_name, "measurement_model": agreement(
                    plain_probabilities, measured[test_name]["p"], truth)}}
    document.update(shipped(model_path, source, args, sets, plain_probabilities, truth, test_name))
    return document


def shipped(model_path: Path, source, args, sets: dict, plain_probabilities: np.ndarray, truth: np.ndarray,
            test_name: str) -> dict:
    """`allx convert` with --ood (library call), then EdgeModel.classify on every set: the device's own marks."""
    from dataclasses import replace

    from allx.convert.check import gate
    from allx.convert.modes import DEFAULT_REPRESENTATIVE_COUNT, Thresholds, resolve_options
    from allx.convert.pipeline import convert_keras
    from allx.edge_runner.model import EdgeModel

    folder = args.models_dir / model_path.parent.name
    print(f"{model_path}: allx convert --int8 --ood -> {folder} ...", file=sys.stderr)
    count = min(DEFAULT_REPRESENTATIVE_COUNT, len(source.split.train))
    # The gate is opened here (this measures the warning, and convert calibrates only a passed model);
    # the default gate's verdict is recorded beside the rates.
    options = resolve_options("int8", representative_count=count, max_drop=100.0, max_class_drop=100.0,
                              min_agreement=0.0, ood=True, ood_flag_rate=args.flag_rate)
    result = convert_keras(model_path, folder, options)
    default_gate = gate(replace(result.check, thresholds=Thresholds()))
    model = EdgeModel.load(result.files["manifest"], threads=args.threads)
    rates, test_probabilities = {}, None
    for name, (items, load) in sets.items():
        if name == "train":
            continue
        predictions = [model.classify(load(item)) for item in items]
        rates[name] = float(np.mean([p.ood for p in predictions]))
        if name == test_name:
            test_probabilities = np.asarray([p.probabilities for p in predictions], np.float32)
    probabilities, embedding = model.predict(load(items[0])), model.read_embedding()
    began = time.perf_counter()
    for _ in range(200):
        model.ood_scorer(probabilities, embedding)
    score_ms = (time.perf_counter() - began) / 200 * 1000
    section = {key: value for key, value in result.manifest.get("ood", {}).items() if key != "score"}
    targets = {"test_at_most": TARGET_TEST_FLAGGED, "test_met": rates[test_name] <= TARGET_TEST_FLAGGED}
    if "other_lab" in rates:
        targets.update(other_lab_at_least=TARGET_OTHER_LAB_FLAGGED,
                       other_lab_met=rates["other_lab"] >= TARGET_OTHER_LAB_FLAGGED)
    return {"shipped": {"folder": str(folder), "check_passed": default_gate.passed, "targets": targets,
                        "check_failures_at_default_gate": list(default_gate.failures),
                        "check_accuracy": result.check.quantized.accuracy,
                        "check_float_accuracy": result.check.float.accuracy,
                        "check_agreement": result.check.agreement, "ood": section, "rates": rates,
                        "ood_score_ms": score_ms},
            "accuracy_shipped": agreement(plain_probabilities, test_probabilities, truth)}


SHOWN = ("test", "other_lab", "generated_noise", "generated_flat", "generated_photo", "generated_other_medical",
         "blurred_test")


def markdown(document: dict) -> str:
    """One table per model: rows = methods (and the shipped model), columns = data sets (fraction flagged)."""
    out = []
    for m in document["models"]:
        columns = [name for name in ("val", *SHOWN) if name in m["images"]]
        split = f", split {m['split_kind']}" if "split_kind" in m else ""
        out += [f"### {m['model']} (embedding {m['embedding_size']}, threshold flags {m['flag_rate']:.0%}: of val "
                f"for max-softmax and energy, of train+val scored out of group for Mahalanobis{split})", ""]
        rows = [(name, row["rates"]) for name, row in m["methods"].items()]
        if "shipped" in m:
            rows.append((f"**shipped: {m['shipped']['ood'].get('method')} via allx-edge**", m["shipped"]["rates"]))
        out += markdown_table(("method", *(f"{c} ({m['images'][c]})" for c in columns)),
                              ((name, *(f"{rates[c]:.1%}" for c in columns)) for name, rates in rows))
        if "shipped" in m:
            sh, section = m["shipped"], m["shipped"]["ood"]
            out.append(f"\nshipped: threshold {section.get('threshold', float('nan')):.4g} on "
                       f"{section.get('components')} axes flags {section.get('held_out_flagged', float('nan')):.1%} of "
                       f"{section.get('held_out_images')} {section.get('held_out_subset')} images; int8 check accuracy "
                       f"{sh['check_accuracy']:.2%} (float "
                       f"{sh['check_float_accuracy']:.2%}, agreement {sh['check_agreement']:.4f}: "
                       f"{'passes' if sh['check_passed'] else 'FAILS'} the default gate); "
                       f"score {sh['ood_score_ms']:.3f} ms per image")
            if "targets" in sh:
                met = {True: "met", False: "NOT met"}
                targets = sh["targets"]
                out.append(f"\ntargets (shipped): test flagged <= {targets['test_at_most']:.0%}: {met[targets['test_met']]}"
                           + (f"; other lab flagged >= {targets['other_lab_at_least']:.0%}: "
                              f"{met[targets['other_lab_met']]}" if "other_lab_met" in targets else ""))
        for key in ("accuracy", "accuracy_shipped"):
            if key in m:
                a = m[key] if key == "accuracy_shipped" else m[key]["measurement_model"]
                out.append(f"\n{key}: int8 plain {a['accuracy_plain']:.2%} vs with OOD outputs "
                           f"{a['accuracy_with_ood_outputs']:.2%} on {a['images']} images, agreement "
                           f"{a['top1_agreement']:.4f}, max |dp| {a['max_abs_probability_difference']:.2g}")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    from allx.edge_runner.bench import machine_info

    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="allx-ood-") as scratch:
            scratch = Path(scratch)
            if args.quick:
                model_path, args.ood_dir = make_quick_run(scratch / "quick")
                args.models = [model_path]
            models = [measure_model(path, args, scratch / f"m{i}") for i, path in enumerate(args.models)]
    except AllxError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    document = {"command": " ".join(["python", "benchmarks/ood.py", *args.argv]),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": vars(machine_info()), "models": models}
    document["markdown"] = markdown(document)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / args.name, json.dumps(document, indent=2) + "\n")
    print(document["markdown"])
    print(f"\nwrote {args.out / args.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
