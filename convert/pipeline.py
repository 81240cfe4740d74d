"""`allx convert` as one library call: validate, convert, check through edge_runner, gate, write OUT_DIR."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from allx import layout
from allx.convert import (accuracy_control, calibrate_quality, debug, edgetpu, embedding, ood, operating,
                          out_of_group, sanity)
from allx.convert.check import CheckPredictions, CheckReport, FidelitySet, run_check
from allx.convert.files import check_writable
from allx.convert.gate import binomial_interval
from allx.convert.manifest import (build_manifest, embed_in_compiled, metadata_tools, output_names,
                                  predictions_csv, publish)
from allx.convert.modes import ConvertOptions
from allx.convert.report import render_report
from allx.convert.representative import calibration_batches, draw_representative, load_representative
from allx.convert.source import Source, load_source
from allx.convert.tflite import (TensorSpec, check_input_quantization, convert_model, describe_tensors,
                                 int16x8_model, output_to_log, saved_model_of)
from allx.dihedral import N_VIEWS
from allx.edge_runner.card_text import card_lines
from allx.edge_runner.model import EdgeModel
from allx.errors import DataError, ModelError, UsageError
from allx.evidence import SHARES_GROUPS, Evidence
from allx.jsonio import read_json
from allx.files import sha256_file, write_atomic
from allx.train.dataset import data_fingerprint as fingerprint
from allx.train.model_card import LIMITS

Progress = Callable[[str, int, int], None]  # progress(stage, done, total)


@dataclass(frozen=True)
class Candidate:
    """One converted model and its check."""

    name: str
    tflite: bytes
    check: CheckReport
    predictions: CheckPredictions
    tensors: tuple


@dataclass(frozen=True)
class ConvertResult:
    """What `allx convert` made for one target (a .tflite precision or the IMX500 package): the check, the
    files written and the manifest (model.json; the IMX500's "Fit In Chip" is its imx500.fit_in_chip). The
    Edge TPU readiness, the trade-off and accuracy control are the .tflite targets' own."""

    check: CheckReport
    files: dict[str, Path]
    manifest: dict
    edgetpu: edgetpu.EdgeTpuReadiness | None = None
    tradeoff: tuple[dict, ...] = ()
    control: accuracy_control.Control | None = None  # int8 failed and accuracy control ran

    @property
    def passed(self) -> bool:
        return self.check.passed


def convert_keras(model_path: str | Path, out_dir: str | Path, options: ConvertOptions,
                  data_dir: str | Path | None = None, split_path: str | Path | None = None,
                  progress: Progress | None = None) -> ConvertResult:
    """Everything `allx convert` does; raises AllxError for bad input, returns the result (passed or not)."""
    out_dir = check_writable(Path(out_dir))
    metadata_tools()  # the .tflite will carry its manifest: fail now, not after the slow work, if it cannot
    log_path = out_dir / layout.CONVERT_LOG
    write_atomic(log_path, f"allx convert {model_path} -> {out_dir} ({options.mode.name})\n")
    with output_to_log(log_path):
        import tensorflow  # noqa: F401  (imported here so its start-up lines go to the log, not the terminal)
    step = (lambda stage: (lambda done, total: progress(stage, done, total))) if progress else (lambda stage: None)
    source = load_source(model_path, data_dir, split_path, step("scanning data for a split"))
    model, ood_note = embedding.plan_model(source.model, options.ood)  # adds the pooled-embedding output when it can
    source = replace(source, model=model)
    subset = CheckPlan(check_subset(source.split, options.check_subset),
                       fidelity_set(source.split, options.fidelity_images, options.seed))
    pixels = calibration_pixels(source, options, step("loading representative images"))
    representative = calibration_batches(pixels) if pixels is not None else None
    control = None
    with saved_model_of(source.model, source.input_size) as saved_model_dir:
        tflite = convert_model(saved_model_dir, options.mode, options.io, log_path, representative)
        chosen = checked_candidate(options.mode.name, tflite, source, subset, options, out_dir,
                                   step(f"checking {options.mode.name}"))
        found = diagnose(saved_model_dir, representative, chosen, source, subset, options, out_dir, log_path,
                         step("checking the selective model")) if options.debug else Diagnosis(chosen)
        if needs_control(found.chosen, options):
            control, found = controlled(saved_model_dir, representative, found, source, subset, options, out_dir,
                                        log_path, step)
        skipped_control = control_not_tried(found.chosen, options)
    integer_io = not found.float_layers and found.chosen is chosen
    extra = {"io": options.io if integer_io else "float",
             "fully_quantized": options.mode.fully_integer and integer_io,
             "representative_count": None if pixels is None else len(pixels),
             "float_layers": list(found.float_layers), "data_fingerprint": data_fingerprint(source),
             "origin": source.origin}
    extra["check_evidence"] = check_evidence(found.chosen.check, found.chosen.predictions, source.split)
    if control is not None:
        extra["accuracy_control"] = control.to_dict()
    elif options.mode.name == "int8" and skipped_control:
        extra["accuracy_control_note"] = skipped_control
    evidence = out_of_group_evidence(found.chosen, ood_note, source, options, step)
    extra.update(operating.sections_for(found.chosen.predictions, source.split, subset.name, source.labels,
                                        options.target_sensitivity, source.run_point, evidence.crossfit))
    if evidence.crossfit is not None:
        extra.update(evidence.quality)
        extra.setdefault("expected_rates", operating.field_rates(evidence.crossfit))
    else:
        extra.update(calibrate_quality.quality_section(source.data_dir, source.split.train, source.input_size,
                                                       step("measuring image quality of train images")))
    warning = ood.outcome_for(evidence.calibration, evidence.note, layout.ood_stats_name(options.mode.name))
    if warning.section is not None:
        extra["ood"] = warning.section
    else:
        extra["ood_note"] = warning.note  # why the model carries no warning (say so, never silently)
    sections = [*found.sections, warning.report, operating.markdown(extra)]
    if control is not None:
        sections.insert(0, accuracy_control.control_markdown(control))
    result = finish(source, options, out_dir, found.chosen, sections, extra, found.layer_csv, warning.stats)
    return replace(result, tradeoff=found.tradeoff, control=control)


@dataclass(frozen=True)
class CheckPlan:
    """Where every candidate is checked: the labelled check subset, and the images fidelity is measured on."""

    name: str
    fidelity: FidelitySet


FIDELITY_EVIDENCE = 1000  # compared images wanted: 0 changed labels in 46 already show 0.98 at 60%, a few in 1000 too


def fidelity_set(split, limit: int, seed: int) -> FidelitySet:
    """Every train+val image (never test), a seeded random `limit` of them when there are more; with fewer
    than FIDELITY_EVIDENCE images, their dihedral views too (up to 8 each: agreement needs no labels, and a
    conversion that changes nothing on 40 images must not be rejected for want of images)."""
    relpaths = [*split.subset("train"), *split.subset("val")]
    if len(relpaths) > limit:
        keep = np.sort(np.random.default_rng(seed).permutation(len(relpaths))[:limit])
        relpaths = [relpaths[i] for i in keep]
    views = min(N_VIEWS, -(-FIDELITY_EVIDENCE // max(len(relpaths), 1))) if relpaths else 1
    return FidelitySet(tuple(relpaths), "train+val", views=views)


def needs_control(candidate: Candidate, options: ConvertOptions) -> bool:
    """Accuracy control runs for a failed plain int8 model, unless the user chose the layers or the Edge TPU."""
    return (options.accuracy_control and options.mode.name == "int8" and not options.float_layers
            and not options.edgetpu and not candidate.check.passed
            and sanity.float_beats_chance(candidate.check, candidate.predictions.truth))


def control_not_tried(candidate: Candidate, options: ConvertOptions) -> str | None:
    """Why accuracy control did not run for a failed int8 model although it is on (said, never silent)."""
    if candidate.check.passed or not options.accuracy_control or options.mode.name != "int8":
        return None
    if options.edgetpu:
        return ("accuracy control not tried: --edgetpu keeps every layer int8 (float layers and int16 "
                "activations cannot run on the Edge TPU)")
    if options.float_layers:
        return f"accuracy control not tried: --float-layers {options.float_layers} chose the float layers"
    if not sanity.float_beats_chance(candidate.check, candidate.predictions.truth):
        return ("accuracy control not tried: the float model itself does not beat chance, and no int8 variant "
                "can do better than the model it copies (train it again, e.g. with pretrained weights)")
    return None


def controlled(saved_model_dir: str, representative, found: Diagnosis, source: Source, subset: CheckPlan,
               options: ConvertOptions, out_dir: Path, log_path: Path, step) -> tuple[accuracy_control.Control, Diagnosis]:
    """Run accuracy control; the Diagnosis keeps the chosen variant (or the failed int8 model when none passed)."""
    def rank_layers():
        return found.layers or debug.measure_layer_errors(saved_model_dir, representative, log_path)

    def check(name: str, tflite: bytes) -> Candidate:
        return checked_candidate(name, tflite, source, subset, options, out_dir, step(f"checking {name}"),
                                 integer_io=False)

    control = accuracy_control.control_accuracy(
        found.chosen, rank_layers,
        lambda names: debug.selective_model(saved_model_dir, representative, names, log_path),
        lambda: int16x8_model(saved_model_dir, log_path, representative), check, options.max_tries)
    chosen = control.chosen
    if chosen is None:
        return control, found
    problems, _ = edgetpu.check_readiness(chosen.candidate.tflite)
    control = replace(control, edgetpu_problems=problems)
    return control, replace(found, chosen=chosen.candidate, float_layers=chosen.float_layers)


@dataclass(frozen=True)
class OutOfGroup:
    """The cross-fitted evidence every shipped number is set on (convert.out_of_group), or why there is none."""

    calibration: ood.OodCalibration | None = None
    crossfit: operating.CrossFitted | None = None
    quality: dict | None = None
    note: str | None = None  # why the out-of-distribution warning is off


def out_of_group_evidence(chosen: Candidate, note: str | None, source: Source, options: ConvertOptions,
                          step) -> OutOfGroup:
    """One pass over train+val through the converted model (a rejected one is not worth the time), then
    the OOD threshold, the quality limits and the out-of-fold probabilities, fold by fold."""
    if note is not None:
        return OutOfGroup(note=note)
    if not chosen.check.passed:
        return OutOfGroup(note="not calibrated: the model failed the accuracy check")
    edge_model = ood.edge_model_of(chosen.tflite, chosen.tensors, source.labels)
    train_val = out_of_group.read_train_val(edge_model, source.data_dir, source.split,
                                            operating.split_groups(source.split), options.seed,
                                            step("out-of-group evidence: train+val images"))
    flag_rate = ood.DEFAULT_FLAG_RATE if options.ood_flag_rate is None else options.ood_flag_rate
    calibration = ood.calibrate(edge_model, train_val, flag_rate, seed=options.seed)
    quality, poor = calibrate_quality.crossfit_quality(train_val, options.seed)
    probabilities = out_of_group.surrogate_probabilities(train_val.folds, train_val.embeddings, len(source.labels),
                                                         trained_c(source))
    flags = operating.FieldFlags(calibration.scores > calibration.threshold, poor)
    return OutOfGroup(calibration, operating.CrossFitted(train_val.folds, probabilities, flags), quality)


def check_evidence(check: CheckReport, predictions: CheckPredictions, split) -> dict:
    """model.json "check_evidence": how the check's accuracy and fidelity relate to training. Accuracy is
    measured on the check subset (out of group only when the split kept patients or file blocks whole);
    fidelity on the train+val images themselves, which needs no labels but shares groups with training."""
    accuracy = operating.subset_evidence(split, predictions.paths)
    correct = int(round(check.quantized.accuracy * check.images))
    records = {"accuracy": replace(accuracy, interval=binomial_interval(correct, check.images)).to_dict()}
    if check.fidelity is not None:
        seen = operating.subset_evidence(split, [*split.subset("train"), *split.subset("val")])
        records["fidelity"] = Evidence(SHARES_GROUPS, seen.grouping, seen.groups, 0, check.fidelity.images,
                                       (check.fidelity.agreement_bound, 1.0)).to_dict()
    return records


def trained_c(source: Source) -> float | None:
    """The C a logreg head was fitted with (OPERATING_POINT beside the model, read only when it is this
    model's), so the out-of-fold head matches the shipped one; None: the default."""
    if source.run_point is None:
        return None
    c = read_json(source.model_path.parent / layout.OPERATING_POINT, "operating point", ModelError).get("C")
    return float(c) if isinstance(c, (int, float)) and c > 0 else None


@dataclass(frozen=True)
class Diagnosis:
    """What --debug / --float-layers found, and the model to keep (the selective one with --float-layers)."""

    chosen: Candidate
    sections: tuple[str, ...] = ()
    layer_csv: str | None = None
    float_layers: tuple[str, ...] = ()
    tradeoff: tuple[dict, ...] = ()
    layers: tuple = ()  # debug.LayerError, worst first, when --debug measured them


def diagnose(saved_model_dir: str, representative, full: Candidate, source: Source, subset: CheckPlan,
             options: ConvertOptions, out_dir: Path, log_path: Path, progress) -> Diagnosis:
    """Per-layer errors; with --float-layers N, the N worst layers kept in float and the check run again."""
    layers = debug.measure_layer_errors(saved_model_dir, representative, log_path)
    sections = (debug.layers_markdown(layers, layout.LAYER_ERRORS.format(precision=options.mode.name)),)
    if not options.float_layers:
        return Diagnosis(full, sections, debug.layers_csv(layers), layers=layers)
    if options.float_layers >= len(layers):
        raise UsageError(f"got --float-layers {options.float_layers}, expected at most {len(layers) - 1} "
                         f"(this model has {len(layers)} quantized layers; all in float is --float32)")
    float_layers = tuple(layer.tensor_name for layer in layers[:options.float_layers])
    mixed = debug.selective_model(saved_model_dir, representative, float_layers, log_path)
    chosen = checked_candidate(f"int8 + {len(float_layers)} float layers", mixed, source, subset, options, out_dir,
                               progress)
    tradeoff = (tradeoff_row(full), tradeoff_row(chosen))
    return Diagnosis(chosen, (*sections, debug.tradeoff_markdown(list(tradeoff))), debug.layers_csv(layers),
                     float_layers, tradeoff, layers)


def check_subset(split, requested: str | None) -> str:
    """The subset the check runs on: as asked, else val when the split has one, else test."""
    name = requested or ("val" if split.val else "test")
    if not split.subset(name):
        other = "" if requested else " and val is empty too"
        raise DataError(f"the {name} subset of the split is empty{other}, expected images to check on")
    return name


def calibration_pixels(source: Source, options: ConvertOptions, progress) -> np.ndarray | None:
    if not options.mode.needs_representative:
        return None
    relpaths = draw_representative(source.split, options.representative_count, options.seed)
    return load_representative(source.data_dir, relpaths, source.input_size, progress)


def checked_candidate(name: str, tflite: bytes, source: Source, subset: CheckPlan, options: ConvertOptions,
                      out_dir: Path, progress, integer_io: bool = True) -> Candidate:
    """Run the accuracy check on `tflite` through edge_runner.EdgeModel (the allx-edge code path).

    integer_io False: a variant with float input and output (float layers, 16x8), whatever --io said."""
    input_spec, outputs = describe_tensors(tflite)
    if options.mode.fully_integer and not options.float_layers and integer_io:
        check_input_quantization(input_spec, options.io)
    edge_model = EdgeModel.from_bytes(tflite, options.mode.file_name, labels=source.labels)
    tensors = (input_spec, *split_outputs(outputs, edge_model.output["name"]))
    report, predictions = run_check(source.model, edge_model, source.data_dir, source.split.subset(subset.name),
                                    source.split.labels(subset.name), source.labels, options.mode.name,
                                    subset.name, options.thresholds, progress, subset.fidelity)
    report = sanity.with_sanity_failures(report, predictions, source.model_path)
    return Candidate(name, tflite, report, predictions, tensors)


def split_outputs(outputs: tuple[TensorSpec, ...], probabilities_name: str) -> tuple[TensorSpec, TensorSpec | None]:
    """(probabilities, embedding or None): the edge runner chose the probabilities; any other output is the embedding."""
    probabilities = next(o for o in outputs if o.name == probabilities_name)
    others = [o for o in outputs if o.name != probabilities_name]
    return probabilities, (others[0] if len(others) == 1 else None)


def tradeoff_row(candidate: Candidate) -> dict:
    return {"model": candidate.name, "accuracy": candidate.check.quantized.accuracy,
            "agreement": candidate.check.agreement, "size_bytes": len(candidate.tflite),
            "latency_ms_p50": candidate.check.latency_ms_p50, "passed": candidate.check.passed}


def finish(source: Source, options: ConvertOptions, out_dir: Path, chosen: Candidate, sections: list[str],
           extra: dict, layer_csv: str | None, ood_stats: bytes | None = None) -> ConvertResult:
    """Edge TPU assessment, manifest, report, and the atomic writes under passed or rejected names."""
    names = output_names(options.mode.name, chosen.check.passed)
    stats_name = layout.ood_stats_name(options.mode.name)
    side_files = {} if ood_stats is None else {stats_name: ood_stats}  # embedded in the .tflite and written beside
    source_info = {"source_model": str(source.model_path.resolve()), "source_model_sha256": sha256_file(source.model_path),
                   "data_dir": str(source.data_dir.resolve())}
    readiness = None
    if options.edgetpu:
        readiness = assess_edgetpu(chosen.tflite, out_dir, names["model"])
        extra = {**extra, "edgetpu": readiness.to_dict()}
    extra = {**extra, "limits": list(LIMITS)}  # the training card's limits travel with the model
    manifest = build_manifest(names["model"], chosen.check, chosen.tensors, source_info, extra)
    if readiness is not None:
        readiness = with_compiled_metadata(readiness, out_dir, manifest, side_files)
        manifest["edgetpu"] = readiness.to_dict()
        sections.append(edgetpu.readiness_markdown(readiness))
    measured = [line for line in card_lines(manifest) if "measured" in line.words]  # the words allx-edge info uses
    if measured:
        sections.append("## How each figure was measured\n\n" + "\n".join(f"- {line.topic}: {line.words}"
                                                                          for line in measured) + "\n")
    sections.append("## Limits\n\n" + "\n".join(f"- {limit}" for limit in LIMITS) + "\n")
    report_md = render_report(manifest, chosen.check, len(chosen.tflite), source.model_path.stat().st_size,
                              tuple(sections))
    previous = {name: (out_dir / name).read_bytes() for name in side_files if (out_dir / name).is_file()}
    try:
        files = publish(out_dir, chosen.tflite, manifest, report_md,
                        predictions_csv(chosen.predictions, source.labels), names, side_files)
    except BaseException:  # the old manifest still names these side files: give them back their old bytes
        for name in side_files:
            restore_file(out_dir / name, previous.get(name))
        raise
    if ood_stats is not None:
        files["ood_stats"] = files.pop(stats_name)
    if layer_csv is not None:
        files["layers"] = write_atomic(out_dir / layout.LAYER_ERRORS.format(precision=options.mode.name), layer_csv)
    return ConvertResult(chosen.check, files, manifest, readiness)


def assess_edgetpu(tflite: bytes, out_dir: Path, model_name: str) -> edgetpu.EdgeTpuReadiness:
    """The compiler reads a file: give it the model under its final name in a scratch folder."""
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".edgetpu-input-") as scratch:
        path = Path(scratch) / model_name
        path.write_bytes(tflite)
        return edgetpu.assess(tflite, path, out_dir)


def with_compiled_metadata(readiness: edgetpu.EdgeTpuReadiness, out_dir: Path, manifest: dict,
                           side_files: dict[str, bytes]) -> edgetpu.EdgeTpuReadiness:
    """The compiled *_edgetpu.tflite gets the int8 model's embedded metadata; the outcome is recorded in
    edgetpu.compiled.metadata (the manifest embedded in the compiled file says "embedded" already)."""
    compiled = readiness.compiled
    if compiled is None or compiled.model_file is None:
        return readiness
    compiled = replace(compiled, metadata=edgetpu.METADATA_EMBEDDED)
    manifest["edgetpu"] = replace(readiness, compiled=compiled).to_dict()
    outcome = embed_in_compiled(out_dir / compiled.model_file, manifest, side_files)
    return replace(readiness, compiled=replace(compiled, metadata=outcome))


def restore_file(path: Path, previous: bytes | None) -> None:
    """Put back what `path` held before (or remove it when it did not exist)."""
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, previous)


def data_fingerprint(source: Source) -> str:
    split = source.split
    return fingerprint(source.data_dir, [*split.train, *split.val, *split.test])
