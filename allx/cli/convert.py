"""`allx convert`: Keras model -> TFLite (float32, float16, dynamic or int8), with an accuracy check and gate."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from allx.console import handle_errors, import_tensorflow_quietly, progress_bars, stdout
from allx.convert.edgetpu import METADATA_EMBEDDED
from allx.convert.modes import (DEFAULT_FIDELITY_IMAGES, DEFAULT_FLAG_RATE, DEFAULT_MAX_TRIES,
                                DEFAULT_REPRESENTATIVE_COUNT, DEFAULT_THRESHOLDS, resolve_options)
from allx.convert.ood_report import summary_line
from allx.convert.imx500 import convert_imx500
from allx.convert.pipeline import convert_keras
from allx.errors import CheckFailed, ConversionError, UsageError
from allx.layout import RecordKind
from allx.text import percent


@handle_errors
def convert(
    model: Annotated[Path, typer.Argument(help="MODEL.keras (from `allx train`: its run folder's split.json "
                                               "and labels.txt are used without flags).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).", show_default=False)],
    int8: Annotated[bool, typer.Option("--int8", help="Full-integer int8 (the default): int8 weights and "
                                                      "activations, TFLITE_BUILTINS_INT8 only.")] = False,
    float16: Annotated[bool, typer.Option("--float16", help="float16 weights.")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic range: int8 weights, float activations.")] = False,
    float32: Annotated[bool, typer.Option("--float32", help="No quantization (reference).")] = False,
    imx500: Annotated[bool, typer.Option("--imx500", help="Raspberry Pi AI Camera (Sony IMX500): MCT int8 and "
                                         "Sony's imxconv-tf in the tool environment (`allx tools install imx500`, "
                                         "created on first use); writes packerOut.zip and its memory report. The "
                                         "network must fit the chip's 8 MB: EfficientNet-Lite0 and MobileNetV2 do, "
                                         "ResNet50 does not.")] = False,
    data: Annotated[Optional[Path], typer.Option("--data", help="DATA_DIR with one folder per class "
                                                 "(default: meta.data_dir of the split).")] = None,
    split: Annotated[Optional[Path], typer.Option("--split", help="SPLIT.json (default: split.json beside "
                                                  "MODEL, else a split made now).")] = None,
    representative_count: Annotated[Optional[int], typer.Option(
        "--representative-count", help="int8 only: calibration images, drawn stratified from the TRAIN "
        f"subset (default {DEFAULT_REPRESENTATIVE_COUNT}).", show_default=False)] = None,
    check_subset: Annotated[Optional[str], typer.Option(
        "--check-subset", help="val or test (default: val if the split has one, else test).")] = None,
    max_drop: Annotated[float, typer.Option("--max-drop", help="Limit on the bound of the true overall accuracy "
                                            "drop, percentage points.")] = DEFAULT_THRESHOLDS.max_drop,
    max_class_drop: Annotated[float, typer.Option("--max-class-drop", help="Limit on the bound of the true recall "
                                                  "drop of any class, percentage points.")] = DEFAULT_THRESHOLDS.max_class_drop,
    min_agreement: Annotated[float, typer.Option("--min-agreement", help="Limit on the lower bound of the fraction "
                                                 "of train+val images with the float model's top-1 label "
                                                 "(fidelity).")] = DEFAULT_THRESHOLDS.min_agreement,
    confidence: Annotated[float, typer.Option("--confidence", help="One-sided confidence of the gate's exact bounds "
                                              "(defaults chosen by benchmarks/gate_simulation.py).")] = DEFAULT_THRESHOLDS.confidence,
    fidelity_images: Annotated[int, typer.Option("--fidelity-images", help="At most this many train+val images "
                                                 "for fidelity (0: the check images only).")] = DEFAULT_FIDELITY_IMAGES,
    accuracy_control: Annotated[bool, typer.Option("--accuracy-control/--no-accuracy-control", help="int8 only: when "
                                                   "int8 fails the gate, keep the 8 most damaging layers in float; if "
                                                   "that fails try int16 activations, if it passes bisect down to "
                                                   "fewer float layers (2, then 1 or 4); keep the fastest that "
                                                   "passed.")] = True,
    max_tries: Annotated[int, typer.Option("--max-tries", help="Accuracy control: at most this many "
                                           "conversions (its search needs at most 3).")] = DEFAULT_MAX_TRIES,
    io: Annotated[Optional[str], typer.Option("--io", help="int8 only: input/output type uint8, int8 or float "
                                              "(default uint8).", show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="int8 only: per-layer quantization error "
                                        "(report + layer_errors_int8.csv).")] = False,
    float_layers: Annotated[int, typer.Option("--float-layers", help="int8 only: keep the N worst layers "
                                              "(per --debug) in float, check again, report the trade-off.")] = 0,
    edgetpu: Annotated[bool, typer.Option("--edgetpu", help="int8 only: check Edge TPU readiness; run "
                                          "edgetpu_compiler when installed.")] = False,
    ood: Annotated[Optional[bool], typer.Option("--ood/--no-ood", help="Out-of-distribution warning: add the "
                                                "pooled-embedding output and calibrate its threshold (default: on "
                                                "when the model has the allx train layout).", show_default=False)] = None,
    ood_flag_rate: Annotated[Optional[float], typer.Option(
        "--ood-flag-rate", help="Fraction of held-out (val) images the OOD threshold flags "
        f"(default {DEFAULT_FLAG_RATE:g}).",
        show_default=False)] = None,
    target_sensitivity: Annotated[float, typer.Option(
        "--target-sensitivity", help="Malignant sensitivity the operating point must reach on the check subset "
        "(val); the best benign specificity at it is chosen, for single fields and for samples.")] = 0.99,
    json_output: Annotated[bool, typer.Option("--json", help="Print the check results as JSON.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the representative draw.")] = 0,
):
    """Convert MODEL.keras to TFLite and prove the accuracy holds.

    The converted model is run through the allx-edge inference code on the check subset next to the
    float Keras model. Exit codes: 0 passed (int8 or an accuracy-controlled variant); 3 failed the accuracy
    check, every accuracy-control try too (saved as model_<precision>.rejected.tflite, a model that passed
    before is kept); 2 bad input or conversion error.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter; details go to convert.log
    import_tensorflow_quietly()

    chosen = [name for name, flag in (("int8", int8), ("float16", float16), ("dynamic", dynamic),
                                      ("float32", float32), ("imx500", imx500)) if flag]
    if len(chosen) > 1:
        raise UsageError(f"got {' and '.join('--' + c for c in chosen)}, expected one precision")
    options = resolve_options(chosen[0] if chosen else "int8", io, representative_count, check_subset, max_drop,
                              max_class_drop, min_agreement, debug, float_layers, edgetpu, seed, ood, ood_flag_rate,
                              target_sensitivity, confidence, accuracy_control, max_tries, fidelity_images)
    if not options.mode.tflite:
        with progress_bars(lines_when_piped=True) as progress:
            convert_for_camera(convert_imx500(model, out, options, data, split, progress), json_output)
        return
    with progress_bars() as progress:
        result = convert_keras(model, out, options, data, split, progress)
    if json_output:
        print(json.dumps(result_json(result), indent=2))
    else:
        render(result)
    if not result.passed:
        tried = "" if result.control is None else (f"; accuracy control tried {len(result.control.attempts)} "
                                                   "variant(s), none passed")
        raise CheckFailed(f"{result.check.precision} failed the accuracy check: {'; '.join(result.check.failures)}"
                          f"{tried}; saved as {result.files['model'].name}, see {result.files['report']}")
    if result.edgetpu is not None and not result.edgetpu.ready:
        raise ConversionError(f"{result.files['model'].name} passed the check but is not Edge TPU-ready: "
                              f"{'; '.join(result.edgetpu.problems)}")


def convert_for_camera(result, json_output: bool) -> None:
    """Print an --imx500 result; a rejected one is exit 3 like any other target."""
    if json_output:
        document = {"kind": RecordKind.CHECK.value, **result.check.to_dict(), "imx500": result.manifest["imx500"],
                    "files": {role: str(path) for role, path in result.files.items()}}
        for key in ("operating_point", "sample_rule", "quality"):
            document[key] = result.manifest.get(key)
        print(json.dumps(document, indent=2))
    else:
        render_imx500(result)
    if not result.passed:
        raise CheckFailed(f"imx500 failed the accuracy check: {'; '.join(result.check.failures)}; saved as "
                          f"{result.files['model'].name}, see {result.files['report']}")


def render_imx500(result) -> None:
    check, imx = result.check, result.manifest["imx500"]
    verdict = "[green]PASSED[/green]" if check.passed else "[red]REJECTED[/red]"
    stdout.print(f"imx500 (MCT-quantized, run on this CPU): {verdict} on {check.images} {check.subset} images "
                 f"(float {percent(check.float.accuracy, 2, 'n/a')}, quantized {percent(check.quantized.accuracy, 2, 'n/a')}, "
                 f"drop {check.drop_pp:.2f} pp, agreement {check.agreement:.4f})")
    for count in check.paired:
        stdout.print(f"  {count.verdict()}", highlight=False, markup=False)
    if check.fidelity is not None:
        stdout.print(f"  {check.fidelity.verdict(check.thresholds.confidence)}", highlight=False, markup=False)
    stdout.print(f"Fit In Chip: {imx['fit_in_chip']}; int8 weights {imx['weights_int8_bytes'] / 1e6:.2f} MB; tool "
                 f"step {sum(imx['tool_seconds'].values()):.0f} s", highlight=False, markup=False)
    for line in operating_lines(result.manifest):
        stdout.print(line, highlight=False, markup=False)
    stdout.print(f"wrote {', '.join(path.name for path in result.files.values())} in {result.files['model'].parent}",
                 highlight=False)


def result_json(result) -> dict:
    document = {"kind": RecordKind.CHECK.value, **result.check.to_dict()}
    document["files"] = {role: str(path) for role, path in result.files.items()}
    document["input"] = result.manifest["input"]
    document["split_kind"] = result.manifest.get("origin", {}).get("split_kind")
    if result.edgetpu is not None:
        document["edgetpu"] = result.edgetpu.to_dict()
    if result.tradeoff:
        document["tradeoff"] = list(result.tradeoff)
    for key in ("operating_point", "sample_rule", "quality"):
        document[key] = result.manifest.get(key)
    if result.control is not None:
        document["accuracy_control"] = result.control.to_dict()
    elif result.manifest.get("accuracy_control_note"):
        document["accuracy_control_note"] = result.manifest["accuracy_control_note"]
    document["ood"] = result.manifest.get("ood")  # null: no warning, "ood_note" says why
    if document["ood"] is None:
        document["ood_note"] = result.manifest.get("ood_note")
    return document


def render(result) -> None:
    check = result.check
    verdict = "[green]PASSED[/green]" if check.passed else "[red]REJECTED[/red]"
    stdout.print(f"{check.precision}: {verdict} on {check.images} {check.subset} images "
                 f"(drop {check.drop_pp:.2f} pp, agreement {check.agreement:.4f})")
    for count in check.paired:
        stdout.print(f"  {count.verdict()}", highlight=False, markup=False)
    if check.fidelity is not None:
        stdout.print(f"  {check.fidelity.verdict(check.thresholds.confidence)}", highlight=False, markup=False)
    table = Table("class", "images", "float recall", f"{check.precision} recall", "drop (pp)")
    for row in check.per_class:
        table.add_row(row.label, str(row.support), percent(row.float_recall, 2, 'n/a'), percent(row.quantized_recall, 2, 'n/a'),
                      "n/a" if row.drop_pp is None else f"{row.drop_pp:+.2f}")
    table.add_row("all", str(check.images), percent(check.float.accuracy, 2, 'n/a'), percent(check.quantized.accuracy, 2, 'n/a'),
                  f"{check.drop_pp:+.2f}", style="bold")
    stdout.print(table)
    spec = result.manifest["input"]
    stdout.print(f"input {spec['dtype']} scale {spec['scale']:g} zero point {spec['zero_point']}; "
                 f"malignant sensitivity float {percent(check.float.malignant_sensitivity, 2, 'n/a')} -> "
                 f"{percent(check.quantized.malignant_sensitivity, 2, 'n/a')}", highlight=False)
    for failure in check.failures:
        stdout.print(f"[red]limit broken:[/red] {failure}", highlight=False)
    if result.control is not None:
        render_control(result.control)
    elif result.manifest.get("accuracy_control_note"):
        stdout.print(result.manifest["accuracy_control_note"], highlight=False, markup=False)
    stdout.print(summary_line(result.manifest.get("ood"), result.manifest.get("ood_note")), highlight=False,
                 markup=False)
    for line in operating_lines(result.manifest):
        stdout.print(line, highlight=False, markup=False)
    if result.edgetpu is not None:
        stdout.print(f"Edge TPU: {'ready' if result.edgetpu.ready else 'not ready'}; {result.edgetpu.note}",
                     highlight=False, markup=False)
        compiled = result.edgetpu.compiled
        if compiled is not None and compiled.model_file is not None:
            carries = "its metadata embedded (works alone)" if compiled.metadata == METADATA_EMBEDDED else compiled.metadata
            stdout.print(f"Edge TPU: {compiled.model_file}: {carries}", highlight=False, markup=False)
    stdout.print(f"wrote {', '.join(path.name for path in result.files.values())} in {result.files['model'].parent}",
                 highlight=False)


def render_control(control) -> None:
    """The accuracy-control tries, in the order made, and the one kept."""
    table = Table("accuracy control try", "MB", "p50 ms", "accuracy", "drop bound pp", "fidelity", "gate", "s")
    for row in [attempt.to_dict() for attempt in control.attempts]:
        if "accuracy" not in row:
            table.add_row(row["name"], "", "", "", "", "", "conversion failed", f"{row['seconds']:.1f}")
            continue
        table.add_row(row["name"], f"{row['size_bytes'] / 1e6:.3f}", f"{row['latency_ms_p50']:.2f}",
                      percent(row["accuracy"], 2, 'n/a'), f"{row['drop_bound_pp']:.2f}", f"{row['agreement']:.4f}",
                      "pass" if row["passed"] else "fail", f"{row['seconds']:.1f}")
    stdout.print(table)
    chosen = control.chosen
    stdout.print(f"accuracy control: {'kept ' + chosen.name if chosen else 'no variant passed'} "
                 f"({control.seconds:.1f} s); Edge TPU: {control.edgetpu_note}", highlight=False, markup=False)
    if control.not_tried:
        stdout.print(f"accuracy control: not tried: {'; '.join(control.not_tried)}", highlight=False, markup=False)
    for note in control.notes:
        stdout.print(f"accuracy control: {note}", highlight=False, markup=False)


def operating_lines(manifest: dict) -> list[str]:
    """Sensitivity and specificity at the chosen operating points, and the quality limits (or why there are none)."""
    point, rule, quality = (manifest.get(key) for key in ("operating_point", "sample_rule", "quality"))
    if not point:
        lines = [manifest.get("operating_note") or "no operating point chosen"]
    else:
        lines = [f"operating point (chosen on {point['chosen_on']}, target sensitivity {point['target_sensitivity']}): "
                 f"B-ALL suspected when 1 - p(Benign) >= {point['threshold']:.4f}; malignant sensitivity "
                 f"{percent_or_na(point['sensitivity'])}, benign specificity {percent_or_na(point['specificity'])}"]
    if rule:
        lines.append(f"sample rule ({rule['chosen_on']}, {rule['samples']} samples): sensitivity "
                     f"{percent_or_na(rule['sensitivity'])}, specificity {percent_or_na(rule['specificity'])}, subtype accuracy "
                     f"{percent_or_na(rule['subtype_accuracy'])}, inconclusive {percent_or_na(rule['inconclusive'])}"
                     f", flagged fields counted at weight {rule.get('flagged_weight', 0):g}")
    if quality and "rejected_out_of_group" in quality:
        lines.append(f"image-quality limits from {quality['images']} train+val images: focus >= "
                     f"{quality['focus_min']:.0f}, rejecting {percent_or_na(quality['rejected_out_of_group'])} of "
                     "them scored out of group")
    else:
        lines.append(f"image-quality limits from {quality['images']} train images: focus >= {quality['focus_min']:.0f}, "
                     f"rejecting {percent_or_na(quality['rejected_share'])} of them" if quality
                     else manifest.get("quality_note") or "no image-quality limits")
    return lines


def percent_or_na(value: float | None) -> str:
    return percent(value, 2, "n/a")
