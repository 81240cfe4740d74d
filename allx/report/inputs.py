"""Read the report's JSON inputs, tell their kinds apart by their keys, and check the fields the report uses.

A folder stands for the records allx wrote in it: a convert OUT_DIR for its model.json, a train run folder
for its cv.json and metrics.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from allx import layout
from allx.edge_runner.monitor import MonitorReport, monitor_log
from allx.errors import AllxError
from allx.jsonio import read_json as read_json_limited
from allx.layout import RecordKind
from allx.report.fields import Fields, ReportInputError

# How a file's kind is recognised, tried in this order (the first rule that matches wins).
KIND_RULES = (
    ("benchmark", 'a "benchmark" key (written by benchmarks/*.py)'),
    ("bench", '"machine" and "results" (allx-edge bench --json)'),
    ("check", '"passed", "float", "quantized", "agreement", "per_class" (allx convert --json), '
              'or such an object under "check" (model.json)'),
    ("evaluation", '"accuracy", "per_class", "confusion_matrix", "classes" (allx evaluate --json, metrics.json)'),
    ("cv", '"kind": "cv" (allx train --cv, cv.json; the cv.png beside it is embedded)'),
    ("log", "an SQLite file (the audit log of allx-edge: the drift monitor's windows, limits from a model folder "
            "given too)"),
)
RUN_RECORDS = (layout.CV, layout.METRICS)  # what a train run folder given as an input stands for
CHECK_KEYS = ("passed", "float", "quantized", "agreement", "per_class")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SQLITE_MAGIC = b"SQLite format 3\x00"
EVALUATION_KEYS = ("accuracy", "per_class", "confusion_matrix", "classes")


@dataclass(frozen=True)
class BenchRow:
    """One model benchmarked on one device (a row of `allx-edge bench --json` results)."""

    source: str
    device: str
    machine: str  # "Linux 6.1, aarch64, 4 cores, Python 3.11"
    model: str
    precision: str | None
    runtime: str
    threads: int | None
    delegate: str
    p50_ms: float
    p95_ms: float
    p95_from: str  # "p95", "samples" or "p99" (a conservative stand-in when the file has no p95)
    latency_ms: dict  # mean, std, min, p50, p90, p99, max as given
    samples_ms: tuple[float, ...]
    throughput_ips: float | None
    peak_rss_mb: float | None
    file_size_bytes: int | None
    load_ms: float | None
    end_to_end_ips: float | None  # decode + resize + invoke on real images, when the bench had --images


@dataclass(frozen=True)
class ClassAccuracy:
    label: str
    support: int | None
    float_recall: float | None
    quantized_recall: float | None


@dataclass(frozen=True)
class AccuracyCheck:
    """`allx convert`'s float-vs-converted check on one subset."""

    source: str
    precision: str
    model_file: str | None  # the converted model's file name, to pair the check with a benchmarked model
    subset: str
    images: int | None
    passed: bool
    float_accuracy: float
    quantized_accuracy: float
    agreement: float
    mean_abs_prob_diff: float | None
    per_class: tuple[ClassAccuracy, ...]
    sensitivity: tuple[float | None, float | None]  # malignant sensitivity: float, quantized
    specificity: tuple[float | None, float | None]  # benign specificity: float, quantized
    failures: tuple[str, ...]
    max_drop_pp: float | None
    split_kind: str | None
    split_origin: str | None  # where convert took the split from (model.json "origin.split")
    operating_point: dict | None = None  # model.json "operating_point" (allx.decision.OperatingPoint.to_dict)
    sample_rule: dict | None = None  # model.json "sample_rule" (edge_runner.sample.SampleRule.to_dict)
    manifest: dict | None = None  # the whole model.json when the check came from one (its card in words)

    @property
    def drop_pp(self) -> float:
        return (self.float_accuracy - self.quantized_accuracy) * 100.0


@dataclass(frozen=True)
class Evaluation:
    """`allx evaluate --json`: one model on one subset of a split."""

    source: str
    model: str
    subset: str
    split_kind: str | None
    n: int
    accuracy: float
    classes: tuple[str, ...]
    per_class: dict  # class -> {precision, recall, f1, support}
    confusion_matrix: tuple[tuple[int, ...], ...]
    malignant_sensitivity: float | None
    benign_specificity: float | None
    at_operating_point: dict | None = None  # `allx evaluate --target-sensitivity`: chosen on val, reported here


@dataclass(frozen=True)
class CrossValidation:
    """`allx train --cv K` (cv.json): per fold and mean with a 95% bootstrap interval over groups."""

    source: str
    backbone: str
    recipe: str  # the training augmentation, in words ("dihedral", "none")
    split_kind: str  # the SplitKind code the folds were grouped by
    grouping: str  # how the groups were made, in words (from the record's "grouping")
    folds: int
    folds_done: int
    complete: bool
    classes: tuple[str, ...]
    target_sensitivity: float | None
    bootstrap: int | None
    summary: dict  # metric -> {"folds": [...], "mean", "low", "high", "min"}
    results: tuple[dict, ...]  # one per finished fold: sizes, metrics, recall per class
    plot: bytes | None  # cv.png beside cv.json, when present


@dataclass(frozen=True)
class BenchmarkScript:
    """A benchmarks/*.py result, shown as a key/value table plus one table per list of objects."""

    source: str
    name: str
    fields: tuple[tuple[str, str], ...]
    tables: tuple[tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]], ...] = ()  # (key, header, rows)


@dataclass(frozen=True)
class MonitorInput:
    """An audit log given as an input: `allx-edge monitor`'s weekly windows of it."""

    source: str
    report: MonitorReport


@dataclass(frozen=True)
class Inputs:
    sources: tuple[tuple[str, str], ...]  # (file name, kind)
    bench: tuple[BenchRow, ...] = ()
    checks: tuple[AccuracyCheck, ...] = ()
    evaluations: tuple[Evaluation, ...] = ()
    benchmarks: tuple[BenchmarkScript, ...] = ()
    cvs: tuple[CrossValidation, ...] = ()
    monitors: tuple[MonitorInput, ...] = ()


def read_inputs(paths) -> Inputs:
    """Every file read and checked; all unusable files are named together in one ReportInputError."""
    found = {"bench": [], "check": [], "evaluation": [], "benchmark": [], "cv": []}
    sources, problems, logs = [], [], []
    for path in dict.fromkeys(p for given in paths for p in records_of(Path(given))):
        if is_sqlite(path):
            logs.append(path)
            sources.append((path.name, "log"))
            continue
        try:
            kind, items = read_input(path)
        except ReportInputError as err:
            problems.append(str(err))
            continue
        found[kind].extend(items)
        sources.append((path.name, kind))
    monitors = read_logs(logs, next((p for p in map(Path, paths) if is_model(p)), None), problems)
    if problems:
        count = f"{len(problems)} input files are" if len(problems) > 1 else "an input file is"
        raise ReportInputError(f"{count} unusable: " + "; ".join(problems))
    return Inputs(tuple(sources), tuple(found["bench"]), tuple(found["check"]), tuple(found["evaluation"]),
                  tuple(found["benchmark"]), tuple(found["cv"]), tuple(monitors))


def is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False


def is_model(path: Path) -> bool:
    """A convert OUT_DIR or its model.json: where the monitor takes its expected rates from."""
    return (path / layout.MANIFEST).is_file() if path.is_dir() else path.name == layout.MANIFEST


def read_logs(logs: list[Path], model: Path | None, problems: list[str]) -> list[MonitorInput]:
    """Each audit log's weekly windows, judged against the model's expected rates (no limits without a model)."""
    monitors = []
    for path in logs:
        try:
            monitors.append(MonitorInput(path.name, monitor_log(path, model)))
        except AllxError as err:
            problems.append(str(err))
    return monitors


def records_of(path: Path) -> list[Path]:
    """The files a given path stands for: a convert OUT_DIR -> its model.json; a train run folder -> its
    cv.json and metrics.json; anything else -> itself (read_json names a folder that holds none)."""
    if not path.is_dir():
        return [path]
    if (path / layout.MANIFEST).is_file():
        return [path / layout.MANIFEST]
    return [path / name for name in RUN_RECORDS if (path / name).is_file()] or [path]


def read_input(path: Path) -> tuple[str, list]:
    """(kind, parsed items) of one file."""
    data = read_json(path)
    fields = Fields(data, str(path))
    kind = kind_of(data)
    if kind is None and str(data.get("format", "")).startswith("allx-tflite/"):
        raise ReportInputError(f'{path}: a model manifest without an accuracy check ("check"), expected one written '
                               "by allx convert, which checks every model it converts")
    if kind is None:
        rules = "; ".join(f"{name}: {rule}" for name, rule in KIND_RULES)
        raise ReportInputError(f"{path}: unknown kind of JSON (keys {sorted(data)[:8]}), expected one of "
                               f"[{rules}]")
    if kind == "bench":
        return kind, parse_bench(fields, path.name)
    if kind == "check":
        check = fields if has_keys(data, CHECK_KEYS) else fields.child("check")
        return kind, [parse_check(check, path.name, fields)]
    if kind == "evaluation":
        return kind, [parse_evaluation(fields, path.name)]
    if kind == "cv":
        return kind, [parse_cv(fields, path)]
    return kind, [parse_benchmark(data, path.name)]


def read_json(path: Path) -> dict:
    """The file as a JSON object (allx.jsonio: size and nesting limits, finite numbers, short integers)."""
    if path.is_dir():
        raise ReportInputError(f"{path}: is a folder without {layout.MANIFEST}, {layout.CV} or {layout.METRICS}, "
                               "expected a JSON file, a convert OUT_DIR or a train run folder")
    data = read_json_limited(path, "result file", ReportInputError)
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: got a JSON {type(data).__name__}, expected a JSON object")
    return data


def has_keys(data: dict, keys) -> bool:
    return all(key in data for key in keys)


# The `kind` a producer writes (allx.layout.RecordKind) -> the report's input kind; files without one
# (older versions, hand-made) are recognised by KIND_RULES.
RECORD_KINDS = {RecordKind.BENCHMARK.value: "benchmark", RecordKind.BENCH.value: "bench",
                RecordKind.CHECK.value: "check", RecordKind.MANIFEST.value: "check",
                RecordKind.METRICS.value: "evaluation", RecordKind.EVALUATION.value: "evaluation",
                RecordKind.CV.value: "cv"}


def kind_of(data: dict) -> str | None:
    """The kind the file says it is, else the first matching rule of KIND_RULES, else None."""
    if data.get("kind") in RECORD_KINDS:
        return RECORD_KINDS[data["kind"]]
    if isinstance(data.get("benchmark"), str):
        return "benchmark"
    if "machine" in data and "results" in data:
        return "bench"
    if has_keys(data, CHECK_KEYS) or (isinstance(data.get("check"), dict) and has_keys(data["check"], CHECK_KEYS)):
        return "check"
    if has_keys(data, EVALUATION_KEYS):
        return "evaluation"
    return None


def parse_bench(fields: Fields, source: str) -> list[BenchRow]:
    machine = fields.child("machine")
    device = (machine.text("device", optional=True) or machine.text("board", optional=True)
              or machine.text("cpu_model", optional=True) or "unknown device")
    cpu = machine.text("cpu_model", optional=True)
    facts = [cpu if cpu != device else None] + [machine.text(key, optional=True) for key in ("os", "machine")]
    cores = machine.integer("cores", optional=True)
    python = machine.text("python", optional=True)
    facts += [f"{cores} cores" if cores else None, f"Python {python}" if python else None]
    described = ", ".join(fact for fact in facts if fact)
    results = fields.children("results")
    if not results:
        raise ReportInputError(f"{fields.source}: field results is empty, expected at least one benchmarked model")
    return [parse_bench_row(row, source, device, described) for row in results]


def parse_bench_row(row: Fields, source: str, device: str, machine: str) -> BenchRow:
    latency = row.child("latency_ms")  # a latency below zero is a damaged or hand-edited file
    stats = {key: latency.number(key, minimum=0) for key in ("mean", "min", "p50", "p99", "max")}
    stats.update({key: latency.number(key, optional=True, minimum=0) for key in ("std", "p90", "p95")})
    samples = (row.numbers("samples_ms", minimum=0) if row.has("samples_ms")
               else latency.numbers("samples", minimum=0) if latency.has("samples") else ())
    if samples:
        p95, p95_from = percentile(samples, 95), "samples"
    elif stats["p95"] is not None:
        p95, p95_from = stats["p95"], "p95"
    else:
        p95, p95_from = stats["p99"], "p99"
    end_to_end = row.child("end_to_end", optional=True)
    return BenchRow(
        source=source, device=device, machine=machine, model=Path(row.text("model")).name,
        precision=row.text("precision", optional=True), runtime=row.text("runtime"),
        threads=row.integer("threads", optional=True), delegate=row.text("delegate", optional=True) or "cpu",
        p50_ms=stats["p50"], p95_ms=p95, p95_from=p95_from, latency_ms=stats, samples_ms=samples,
        throughput_ips=row.number("throughput_ips", optional=True, minimum=0),
        peak_rss_mb=row.number("peak_rss_mb", optional=True, minimum=0),
        file_size_bytes=row.integer("file_size_bytes", optional=True), load_ms=row.number("load_ms", optional=True, minimum=0),
        end_to_end_ips=end_to_end.number("images_per_s", optional=True) if end_to_end else None)


def percentile(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def parse_check(check: Fields, source: str, document: Fields) -> AccuracyCheck:
    """`check` is the check object; `document` the whole file (a model.json adds where the split came from)."""
    floats, quantized = check.child("float"), check.child("quantized")
    thresholds = check.child("thresholds", optional=True)
    origin = document.child("origin", optional=True) or Fields({}, source)
    split_kind = (check.text("split_kind", optional=True) or document.text("split_kind", optional=True)
                  or origin.text("split_kind", optional=True))
    return AccuracyCheck(
        source=source, precision=check.text("precision", optional=True) or "quantized",
        model_file=model_file_of(document),
        subset=check.text("subset", optional=True) or "unknown subset", images=check.integer("images", optional=True),
        passed=check.flag("passed"), float_accuracy=floats.number("accuracy"),
        quantized_accuracy=quantized.number("accuracy"), agreement=check.number("agreement"),
        mean_abs_prob_diff=check.number("mean_abs_prob_diff", optional=True), per_class=parse_class_checks(check),
        sensitivity=(floats.number("malignant_sensitivity", optional=True),
                     quantized.number("malignant_sensitivity", optional=True)),
        specificity=(floats.number("benign_specificity", optional=True),
                     quantized.number("benign_specificity", optional=True)),
        failures=tuple(str(f) for f in check.data.get("failures") or ()),
        max_drop_pp=thresholds.number("max_drop_pp", optional=True) if thresholds else None,
        split_kind=split_kind, split_origin=origin.text("split", optional=True),
        operating_point=optional_object(document, "operating_point"),
        sample_rule=optional_object(document, "sample_rule"),
        manifest=None if document.data is check.data else document.data)


def optional_object(fields: Fields, key: str) -> dict | None:
    value = fields.data.get(key)
    return value if isinstance(value, dict) else None


def model_file_of(document: Fields) -> str | None:
    """model.json's "model_file", or the file name under "files"."model" in `allx convert --json` output."""
    files = document.child("files", optional=True)
    path = document.text("model_file", optional=True) or (files.text("model", optional=True) if files else None)
    return Path(path).name if path else None


def parse_class_checks(check: Fields) -> tuple[ClassAccuracy, ...]:
    """per_class as convert writes it (a list of objects with "label"), or keyed by label."""
    per_class = check.data["per_class"]
    if isinstance(per_class, dict):
        rows = [(label, check.child("per_class").child(label)) for label in per_class]
    else:
        rows = [(row.text("label"), row) for row in check.children("per_class")]
    return tuple(ClassAccuracy(label, row.integer("support", optional=True), row.number("float_recall", optional=True),
                               row.number("quantized_recall", optional=True)) for label, row in rows)


def parse_evaluation(fields: Fields, source: str) -> Evaluation:
    classes = fields.value("classes", "a list of class names", list)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise ReportInputError(f"{source}: field classes is {json.dumps(classes)[:40]}, expected class names")
    per_class = fields.child("per_class")
    metrics = {name: {key: per_class.child(name).number(key) for key in ("precision", "recall", "f1", "support")}
               for name in classes}
    matrix = fields.value("confusion_matrix", "a list of rows", list)
    square = len(matrix) == len(classes) and all(
        isinstance(r, list) and len(r) == len(classes) and all(isinstance(v, int) for v in r) for r in matrix)
    if not square:
        raise ReportInputError(f"{source}: field confusion_matrix is not {len(classes)}x{len(classes)} integers, "
                               "expected one row and one column per class")
    return Evaluation(
        source=source, model=Path(fields.text("model", optional=True) or "model").name,
        subset=fields.text("subset", optional=True) or "unknown subset",
        split_kind=fields.text("split_kind", optional=True),
        n=fields.integer("n", optional=True) or sum(map(sum, matrix)),
        accuracy=fields.number("accuracy"), classes=tuple(classes), per_class=metrics,
        confusion_matrix=tuple(tuple(r) for r in matrix),
        malignant_sensitivity=fields.number("malignant_sensitivity", optional=True),
        benign_specificity=fields.number("benign_specificity", optional=True),
        at_operating_point=optional_object(fields, "at_operating_point"))


def parse_cv(fields: Fields, path: Path) -> CrossValidation:
    """cv.json as `allx train --cv` writes it (train.cv.write_cv), with the cv.png beside it if there is one."""
    classes = fields.value("classes", "a list of class names", list)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise ReportInputError(f"{path.name}: field classes is {json.dumps(classes)[:40]}, expected class names")
    summary = fields.child("summary")
    for name in summary.data:
        entry = summary.child(name)
        entry.value("folds", "a list of per-fold values", list)
        for key in ("mean", "low", "high", "min"):
            entry.number(key, optional=True)
    results = fields.children("results")
    for fold in results:
        fold.integer("fold")
        for key in ("n_train", "n_val", "n_test", "test_groups"):
            fold.integer(key, optional=True)
        for key in ("accuracy", "malignant_sensitivity", "benign_specificity", "op_sensitivity", "op_specificity"):
            fold.number(key, optional=True)
        recall = fold.child("recall")
        for name in recall.data:
            recall.number(name, optional=True)
    settings = fields.child("settings", optional=True) or Fields({}, path.name)
    plot = path.with_name(layout.CV_PLOT)
    png = plot.read_bytes() if plot.is_file() else None
    return CrossValidation(
        source=path.name, backbone=settings.text("backbone", optional=True) or "unknown backbone",
        recipe=(settings.text("augment", optional=True) or "none").replace(",", "+"),
        split_kind=fields.text("split_kind"), grouping=grouping_words(fields.child("grouping", optional=True)),
        folds=fields.integer("folds"), folds_done=fields.integer("folds_done"), complete=fields.flag("complete"),
        classes=tuple(classes), target_sensitivity=fields.number("target_sensitivity", optional=True),
        bootstrap=fields.integer("bootstrap", optional=True), summary=dict(summary.data),
        results=tuple(fold.data for fold in results), plot=png if png and png.startswith(PNG_MAGIC) else None)


def grouping_words(method: Fields | None) -> str:
    """train.groups' record of how the groups were made, in a few words."""
    if method is None:
        return "not stated"
    words = [f"{method.integer('groups', optional=True) or '?'} groups, the largest of "
             f"{method.integer('largest_group', optional=True) or '?'} images"]
    if method.has("block_size"):
        words.append(f"blocks of {method.integer('block_size')} consecutive file numbers")
    if method.has("groups_file"):
        words.append(f"from {Path(method.text('groups_file')).name}")
    if method.has("near_duplicate"):
        words.append("exact and phash near-duplicates joined")
    neighbours = method.child("neighbours", optional=True)
    if neighbours is not None:
        words.append(f"{neighbours.integer('pairs_joined', optional=True) or 0} embedding near-neighbour pairs joined")
    return ", ".join(words)


def parse_benchmark(data: dict, source: str) -> BenchmarkScript:
    """Scalars at the top level and one level down ("machine.cpu"); each list of objects as its own table."""
    rows, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", v) for k, v in value.items() if not isinstance(v, (dict, list))]
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            tables.append(object_table(key, value))
        elif not isinstance(value, list) and key != "benchmark":
            rows.append((key, value))
    return BenchmarkScript(source, data["benchmark"], tuple((k, format_scalar(v)) for k, v in rows), tuple(tables))


def object_table(key: str, items: list[dict]) -> tuple[str, tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """A list of objects as (key, header, rows): the union of their scalar fields, in first-seen order."""
    header = tuple(dict.fromkeys(k for item in items for k, v in item.items() if not isinstance(v, (dict, list))))
    return key, header, tuple(tuple(format_scalar(item.get(k)) for k in header) for item in items)


def format_scalar(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
