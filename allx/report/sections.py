"""The report's sections, built from the inputs: verdict, devices, accuracy, other benchmarks, limits, inputs."""

from __future__ import annotations

from allx import __version__, layout
from allx.layout import SplitKind
from allx.edge_runner import monitor_view
from allx.edge_runner.card_text import card_lines
from allx.report import plots
from allx.report.document import Bullets, Document, Figure, Paragraph, Section, Table
from allx.report.inputs import KIND_RULES, AccuracyCheck, BenchRow, CrossValidation, Evaluation, Inputs
from allx.text import (accuracy_with_interval, images_per_hour, megabytes, millis,
                              near_duplicates_kept_together, number, percent, points)
from allx.report.verdict import device_names, evidence_limits, make_verdicts

NO_ACCURACY = ("No accuracy file was given (allx convert's model.json or --json output, allx evaluate --json, or "
               "allx train --cv's cv.json), so this report says nothing about how accurate the model is.")
CV_METRICS = (("accuracy", "accuracy"), ("malignant_sensitivity", "malignant sensitivity"),
              ("benign_specificity", "benign specificity"), ("op_sensitivity", "malignant sensitivity at the point"),
              ("op_specificity", "benign specificity at the point"))
NO_BENCH = "No device benchmark was given (allx-edge bench --json), so this report says nothing about speed or memory."


def build_document(inputs: Inputs, title: str, created: str) -> Document:
    limits = Section("Limits of the evidence", (Bullets(tuple(evidence_limits(inputs))),))
    sections = [verdict_section(inputs), device_section(inputs.bench), *accuracy_sections(inputs),
                *benchmark_sections(inputs), *monitor_sections(inputs), limits, inputs_section(inputs)]
    subtitle = (f"Generated {created} by allx {__version__} from {len(inputs.sources)} input file(s). "
                "Decision support only: not a diagnosis.")
    return Document(title, subtitle, tuple(sections))


def verdict_section(inputs: Inputs) -> Section:
    blocks = [Paragraph(f"{v.subject}: {v.text}", "verdict" if v.ok else "warning") for v in make_verdicts(inputs)]
    if not inputs.bench:
        blocks.append(Paragraph(NO_BENCH, "note"))
    if not inputs.checks and not inputs.evaluations and not inputs.cvs:
        blocks.append(Paragraph(NO_ACCURACY, "note"))
    return Section("Verdict", tuple(blocks))


def device_section(rows: tuple[BenchRow, ...]) -> Section:
    if not rows:
        return Section("Devices", (Paragraph(NO_BENCH),))
    names = device_names(rows)
    header = ("device", "model", "precision", "runtime", "threads", "delegate", "p50 ms", "p95 ms",
              "images/hour (p95)", "throughput img/s (mean)", "peak RAM MB", "model size MB", "load ms", "system")
    table_rows = [device_row(row, names[(row.source, row.device)]) for row in rows]
    note = ("images/hour = 3,600,000 / p95 ms: images one after another, each as slow as the 95th-percentile run "
            "(a rate 95% of runs beat; invoke() only). Throughput = 1000 / mean latency, as the bench reports it. "
            "Model size in MB of 10^6 bytes.")
    if any(row.p95_from == "p99" for row in rows):
        note += (" <= / >=: the file has neither p95 nor raw latency samples, so its p99 stands in for p95 "
                 "(an upper bound on latency, a lower bound on images/hour).")
    blocks = [Table(header, tuple(table_rows), note)]
    end_to_end = [row for row in rows if row.end_to_end_ips is not None]
    if end_to_end:
        blocks.append(Table(("device", "model", "end-to-end images/hour (mean)"), tuple(
            (names[(r.source, r.device)], r.model, number(r.end_to_end_ips * 3600, 0)) for r in end_to_end),
            "Decode + resize + invoke on the site's own images (bench --images), one after another."))
    labels = [f"{names[(r.source, r.device)]}\n{r.model}" for r in rows]
    blocks.append(Figure("latency", plots.plot_latency(list(rows), labels),
                         "Latency per device and model: raw samples (shaded) where the file has them, else the "
                         "percentiles it reports."))
    return Section("Devices", tuple(blocks))


def device_row(row: BenchRow, name: str) -> tuple[str, ...]:
    bound = row.p95_from == "p99"
    size = megabytes(row.file_size_bytes / 1e6) if row.file_size_bytes is not None else "-"
    return (name, row.model, row.precision or "-", row.runtime, str(row.threads or "-"), row.delegate,
            millis(row.p50_ms), ("<= " if bound else "") + millis(row.p95_ms),
            (">= " if bound else "") + number(images_per_hour(row.p95_ms), 0), number(row.throughput_ips),
            megabytes(row.peak_rss_mb), size, millis(row.load_ms), row.machine)


def accuracy_sections(inputs: Inputs) -> list[Section]:
    if not inputs.checks and not inputs.evaluations and not inputs.cvs:
        return [Section("Accuracy", (Paragraph(NO_ACCURACY),))]
    intro = []
    if not inputs.checks:
        intro.append(Paragraph("No conversion check was given (allx convert's model.json or --json), so there "
                               "is no float-vs-quantized comparison.", "note"))
    if not inputs.evaluations:
        intro.append(Paragraph("No evaluation was given (allx evaluate --json), so there is no confusion matrix "
                               "nor per-class precision and F1.", "note"))
    sections = [Section("Accuracy", tuple(intro))]
    sections += [check_section(check) for check in inputs.checks]
    sections += [evaluation_section(evaluation, i) for i, evaluation in enumerate(inputs.evaluations, 1)]
    sections += [cv_section(cv, i) for i, cv in enumerate(inputs.cvs, 1)]
    return sections


def cv_section(cv: CrossValidation, index: int) -> Section:
    """Each fold's test numbers, then their mean with the 95% bootstrap-over-groups interval and the worst fold."""
    kind = SplitKind.parse(cv.split_kind)
    intro = (f"{cv.folds_done} of {cv.folds} folds of {cv.backbone} (training augmentation: {cv.recipe}). "
             f"Folds grouped by: {kind.words} (split_kind \"{cv.split_kind}\"; groups: {cv.grouping}). "
             "Each fold's model was selected (early stopping, operating point) on a validation part inside the fold "
             "and tested once on the fold's held-out part; every image is in exactly one test part.")
    blocks = [Paragraph(intro)]
    if not cv.complete:
        blocks.append(Paragraph(f"Interrupted: only {cv.folds_done} of {cv.folds} folds finished; the mean is over "
                                "those.", "warning"))
    metrics = CV_METRICS + tuple((f"recall_{c}", f"recall {c}") for c in cv.classes)
    header = ("fold", "train / val / test images", "test groups", *(words for _, words in metrics))
    rows = [cv_fold_row(fold, cv.classes) for fold in cv.results]
    rows.append(("mean (95% interval)", "", "", *(mean_with_interval(cv.summary.get(key)) for key, _ in metrics)))
    rows.append(("worst fold", "", "", *(percent((cv.summary.get(key) or {}).get("min")) for key, _ in metrics)))
    point = f" for malignant sensitivity >= {cv.target_sensitivity:g}" if cv.target_sensitivity else ""
    note = (f"95% interval: percentile bootstrap ({cv.bootstrap or '?'} samples) of the mean over folds, each fold's "
            f"test groups resampled with replacement (the images of a group move together). Malignant = Early, Pre "
            f"or Pro called malignant; the point = the operating point chosen on each fold's validation part{point}. "
            "Recall of a class = the share of its images called that class.")
    blocks.append(Table(header, tuple(rows), note))
    if cv.plot:
        blocks.append(Figure(f"cv_{index}", cv.plot, f"Cross-validation per fold and mean ({cv.source}; grouped by "
                                                     f"{kind.words})."))
    else:
        blocks.append(Paragraph(f"No {layout.CV_PLOT} beside {cv.source}, so there is no plot.", "note"))
    return Section(f"Cross-validation: {cv.backbone}, {cv.folds_done} folds ({cv.source})", tuple(blocks), level=3)


def cv_fold_row(fold: dict, classes) -> tuple[str, ...]:
    sizes = " / ".join(number(fold.get(key), 0) for key in ("n_train", "n_val", "n_test"))
    recall = fold.get("recall") or {}
    return (str(fold["fold"] + 1), sizes, number(fold.get("test_groups"), 0),
            *(percent(fold.get(key)) for key, _ in CV_METRICS), *(percent(recall.get(c)) for c in classes))


def mean_with_interval(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None:
        return "-"
    if entry.get("low") is None or entry.get("high") is None:
        return percent(entry["mean"])
    return f"{percent(entry['mean'])} ({entry['low'] * 100:.1f}-{entry['high'] * 100:.1f}%)"


def split_sentence(subset: str, split_kind: str | None) -> str:
    grouped = near_duplicates_kept_together(split_kind)
    if grouped:
        return f"Subset: {subset}; the split kept near-duplicate images together ({SplitKind.parse(split_kind).words})."
    if grouped is None:
        return (f"Subset: {subset}; the file does not say how the split was made, nor whether near-duplicates "
                "were kept together.")
    return f"Subset: {subset}; split: {SplitKind.parse(split_kind).words}, so near-duplicates were not kept together."


def check_section(check: AccuracyCheck) -> Section:
    status = "passed" if check.passed else "FAILED"
    intro = (f"The {check.precision} model against the float Keras model on the same {check.images or '?'} images, "
             f"run through the device runner's own inference code. Accuracy check {status}"
             f"{f' (limit: at most {check.max_drop_pp:g} pp lost)' if check.max_drop_pp is not None else ''}. "
             + split_sentence(check.subset, check.split_kind)
             + (f" Split taken from: {check.split_origin}." if check.split_origin else ""))
    overall = Table(("", "float (Keras)", check.precision, "change"), (
        ("accuracy", accuracy_with_interval(check.float_accuracy, check.images),
         accuracy_with_interval(check.quantized_accuracy, check.images), points(-check.drop_pp)),
        change_row("malignant sensitivity", *check.sensitivity),
        change_row("benign specificity", *check.specificity),
        ("agreement (same top-1)", "", percent(check.agreement), ""),
        ("mean |probability difference|", "", number(check.mean_abs_prob_diff, 4), "")),
        "Malignant = Early, Pre or Pro (any B-ALL subtype) called malignant; benign = Benign called benign.")
    per_class = Table(("class", "images", "float accuracy", f"{check.precision} accuracy", "change"), tuple(
        (c.label, number(c.support, 0), percent(c.float_recall), percent(c.quantized_recall),
         points(None if None in (c.float_recall, c.quantized_recall) else (c.quantized_recall - c.float_recall) * 100))
        for c in check.per_class), "Per-class accuracy is the recall of that class.")
    blocks = [Paragraph(intro), overall, per_class,
              Figure(f"class_accuracy_{check.precision}", plots.plot_class_accuracy(check),
                     f"Accuracy per class, float vs {check.precision} ({check.subset} subset).")]
    if check.operating_point:
        blocks.insert(3, operating_table(check.operating_point, check.sample_rule))
    if check.failures:
        blocks.insert(1, Bullets(check.failures, "warning"))
    if check.manifest:
        blocks.append(Table(("model card", "in words"), tuple((line.topic, line.words) for line in
                                                              card_lines(check.manifest)),
                            "The same words as allx-edge info and the device's Model page; model.json keeps full "
                            "precision."))
    return Section(f"Float vs {check.precision} ({check.source})", tuple(blocks), level=3)


def operating_table(point: dict, rule: dict | None) -> Table:
    """Sensitivity and specificity at the operating points convert chose (fields, and samples when present)."""
    rows = [(f"single field (1 - p(Benign) >= {number(point.get('threshold'), 4)})", str(point.get("chosen_on", "")),
             percent(point.get("sensitivity")), percent(point.get("specificity")), "")]
    if rule:
        rows.append((f"sample ({rule.get('samples')} pseudo-samples, mean log-probability)", str(rule.get("chosen_on", "")),
                     percent(rule.get("sensitivity")), percent(rule.get("specificity")), percent(rule.get("inconclusive"))))
    return Table(("operating point", "chosen on", "malignant sensitivity", "benign specificity", "inconclusive"),
                 tuple(rows), f"Chosen for malignant sensitivity >= {point.get('target_sensitivity')} with the best "
                 "benign specificity; allx-edge applies them.")


def change_row(name: str, before: float | None, after: float | None) -> tuple[str, ...]:
    change = None if before is None or after is None else (after - before) * 100
    return name, percent(before), percent(after), points(change)


def evaluation_section(evaluation: Evaluation, index: int) -> Section:
    intro = f"{evaluation.model} on {evaluation.n} images. " + split_sentence(evaluation.subset, evaluation.split_kind)
    overall = Table(("", "value"), (
        ("accuracy", accuracy_with_interval(evaluation.accuracy, evaluation.n)),
        ("malignant sensitivity", percent(evaluation.malignant_sensitivity)),
        ("benign specificity", percent(evaluation.benign_specificity))) + operating_rows(evaluation.at_operating_point))
    per_class = Table(("class", "precision", "recall", "F1", "support"), tuple(
        (name, percent(m["precision"]), percent(m["recall"]), percent(m["f1"]), number(m["support"], 0))
        for name, m in evaluation.per_class.items()))
    figure = Figure(f"confusion_{index}", plots.plot_confusion(evaluation),
                    f"Confusion matrix of {evaluation.model}, {evaluation.subset} subset: true class on rows, "
                    "predicted on columns.")
    return Section(f"Evaluation: {evaluation.model}, {evaluation.subset} subset ({evaluation.source})",
                   (Paragraph(intro), overall, per_class, figure), level=3)


def operating_rows(point: dict | None) -> tuple[tuple[str, str], ...]:
    if not point:
        return ()
    where = f"at the val-chosen point for sensitivity >= {point.get('target_sensitivity')}"
    return ((f"malignant sensitivity {where}", percent(point.get("subset_sensitivity"))),
            (f"benign specificity {where}", percent(point.get("subset_specificity"))))


def benchmark_sections(inputs: Inputs) -> list[Section]:
    if not inputs.benchmarks:
        return []
    sections = [Section("Other benchmarks", (Paragraph("Results of the benchmarks/ scripts, as written.", "note"),))]
    for script in inputs.benchmarks:
        blocks = [Table(("field", "value"), script.fields)] if script.fields else []
        blocks += [Table(header, rows, f"{key}") for key, header, rows in script.tables]
        sections.append(Section(f"{script.name} ({script.source})", tuple(blocks), level=3))
    return sections


def monitor_sections(inputs: Inputs) -> list[Section]:
    """Each audit log's drift monitor: the alarm (or not) of its latest week, the chart, the table, the limits."""
    sections = []
    for index, monitor in enumerate(inputs.monitors, 1):
        report = monitor.report
        alarm = monitor_view.alarm_words(report)
        state = (Paragraph(alarm, "warning") if alarm else
                 Paragraph("The latest window is within its limits." if report.windows else "No sample in the log.",
                           "verdict" if report.windows else "note"))
        blocks = [state, Figure(f"monitor_{index}", b"", "Per week: the rate (blue), its alarm limit (red, dashed), "
                                "the expected rate (grey); an alarm is a filled red dot.",
                                svg=monitor_view.chart_svg(report)),
                  Table(monitor_view.TABLE_HEADER, tuple(monitor_view.table_rows(report))),
                  Bullets(tuple(monitor_view.expected_lines(report)), "note")]
        sections.append(Section(f"Drift monitor ({monitor.source})", tuple(blocks)))
    return sections


def inputs_section(inputs: Inputs) -> Section:
    rules = dict(KIND_RULES)
    return Section("Inputs", (Table(("file", "kind", "recognised by"),
                                    tuple((name, kind, rules[kind]) for name, kind in inputs.sources)),))
