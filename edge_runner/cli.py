"""`allx-edge`: the Raspberry Pi / Coral runner (classify images or a camera feed, bench, info); no TensorFlow."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from pathlib import Path
from typing import Annotated, Optional, get_type_hints

import typer

from allx import __version__
from allx.console import echo, exit_codes_help, handle_errors, rich_console, show_progress
from allx.edge_runner.batch import classify_paths, expand_paths, result_record, write_results_csv
from allx.edge_runner.cli_calibrate import calibrate
from allx.edge_runner.cli_monitor import monitor
from allx.edge_runner.cli_log import (LogDbOption, OperatorOption, SiteConfigOption, check_operator, log_app,
                                      open_run_log, review)
from allx.edge_runner.manifest_check import REJECTED
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.quality import limits_in_use
from allx.edge_runner.runtime import find_runtime
from allx.edge_runner.sample import SampleSession, decision_record, field_decision
from allx.edge_runner.status import NOTE
from allx.edge_runner.sample_batch import CSV_HEADER, classify_samples, csv_rows, samples_from_arguments
from allx.edge_runner.views import (answer_words, batch_summary_line, bench_caption, bench_table, camera_summary_line,
                                    field_line, frame_line, info_lines, result_header, result_line, sample_line,
                                    samples_summary_line)
from allx.decision import UNLIKE_TRAINING
from allx.errors import UsageError
from allx.files import checked_write, write_csv, write_json
from allx.text import printable

# The camera, bench, info, serve and occlusion-map code is imported inside its own command (or option):
# `classify`, the command that must start fast, loads none of it.

EXIT_CODES = exit_codes_help(0, 1, 2, 3, 130)

app = typer.Typer(name="allx-edge", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Classify blood-smear images on a Raspberry Pi / Coral with a .tflite model from "
                       f"`allx convert`. {EXIT_CODES}")

ModelOption = Annotated[Path, typer.Option(
    "--model", "-m", help="A .tflite file (allx convert embeds labels and statistics in it) or its folder.")]
LabelsOption = Annotated[Optional[Path], typer.Option(
    "--labels", help="Labels file (one per line); default: the labels embedded in the .tflite, else model.json, "
    "else labels.txt beside the model. Embedded labels win over this file (with a warning).")]
ThreadsOption = Annotated[Optional[int], typer.Option(
    "--threads", "-t", help="Interpreter threads (default: all cores). classify of several images runs that many "
    "one-thread interpreters side by side instead, each decoding and classifying its own images (--threads 1: one "
    "interpreter).")]
DelegateOption = Annotated[str, typer.Option(
    "--delegate", help="auto (Edge TPU for a model compiled for it), cpu, or edgetpu.")]
OodThresholdOption = Annotated[Optional[float], typer.Option(
    "--ood-threshold", help=f"Flag an image '{UNLIKE_TRAINING}' when its out-of-distribution score "
    "is above this (default: the threshold allx convert calibrated, in model.json ood.threshold; higher flags "
    "fewer images).", show_default=False)]
TtaOption = Annotated[bool, typer.Option(
    "--tta", help="Average the probabilities over the 8 rotations/mirrors of each image (8x the inference time; "
    "see `allx-edge bench --tta`).")]
AllowRejectedOption = Annotated[bool, typer.Option(
    "--allow-rejected", help="Run a model that failed allx convert's accuracy check (status rejected); every "
    "result then says so.")]
NoLogOption = Annotated[bool, typer.Option("--no-log", help="Do not write the audit log.")]
SampleOption = Annotated[Optional[str], typer.Option(
    "--sample", help="The images (camera: the frames) are fields of this one sample (patient smear): each is "
    "quality-checked, and the usable ones give one verdict for the sample (camera: shown with every frame and at "
    "the end).", show_default=False)]


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The options `classify` and `camera` share, declared once: how the model runs and where results are logged."""

    labels: LabelsOption = None
    threads: ThreadsOption = None
    delegate: DelegateOption = "auto"
    ood_threshold: OodThresholdOption = None
    tta: TtaOption = False
    log_db: LogDbOption = None
    operator: OperatorOption = None
    no_log: NoLogOption = False
    site_config: SiteConfigOption = None
    allow_rejected: AllowRejectedOption = False


def with_run_options(command):
    """Give `command` RunOptions' fields as its last options (Typer reads them from the signature) and call it with
    them gathered into one `options: RunOptions`."""
    hints = get_type_hints(RunOptions, include_extras=True)
    shared = [inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default,
                                annotation=hints[field.name]) for field in dataclasses.fields(RunOptions)]
    own = [parameter for name, parameter in inspect.signature(command, eval_str=True).parameters.items()
           if name != "options"]

    @functools.wraps(command)
    def run(*args, **kwargs):
        options = RunOptions(**{parameter.name: kwargs.pop(parameter.name) for parameter in shared
                                if parameter.name in kwargs})
        return command(*args, options=options, **kwargs)

    run.__signature__ = inspect.Signature(own + shared)
    return run


def load_model(model: Path, options: RunOptions):
    """The EdgeModel and whether it is a rejected one the user allowed (refused otherwise, exit 2)."""
    edge_model = EdgeModel.load(model, threads=options.threads, delegate=options.delegate, labels=options.labels,
                                ood_threshold=options.ood_threshold, tta=options.tta,
                                allow_rejected=options.allow_rejected)
    rejected = edge_model.rejected
    for warning in edge_model.warnings + ((NOTE,) if rejected else ()):
        echo(f"warning: {printable(warning)}", err=True)
    return edge_model, rejected


def load_imx500(path: Path, allow_rejected: bool):
    """(Imx500Model, rejected, the opened AI Camera) for `camera --imx500`."""
    from allx.edge_runner import imx500  # the AI Camera's code loads only for this option
    from allx.edge_runner.status import admit

    network = imx500.network_file(path)
    model = imx500.Imx500Model.load(network)
    rejected = admit(model.manifest, network, allow_rejected)
    model.source = imx500.Imx500Source(network)
    return model, rejected, model.source


def mark_rejected(text: str, rejected: bool) -> str:
    return f"{text}  [{NOTE}]" if rejected else text


@app.command()
@handle_errors
@with_run_options
def classify(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs (quote globs).")],
    model: ModelOption,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Show the K most likely labels.")] = 1,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per image on stdout.")] = False,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also write the results to this CSV file.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include images in sub-folders.")] = False,
    sample: SampleOption = None,
    samples_from_folders: Annotated[bool, typer.Option(
        "--samples-from-folders", help="Each PATH is a folder with one sub-folder of fields per sample "
        "(the sub-folder's name is the sample ID).")] = False,
    explain: Annotated[Optional[Path], typer.Option(
        "--explain", help="Also write an occlusion map of each image into this folder (NAME.occlusion.png): the "
        "image with the parts whose hiding (under random blurred masks) lowers the predicted class's probability "
        "the most painted red. Computed with this model; 96 more inferences per image.", show_default=False)] = None,
    *, options: RunOptions,
):
    """Classify images: a table of path, label, confidence, ms and the answer at the model's operating point
    ("B-ALL suspected (Pre, 0.93)" or "no B-ALL seen"), then a summary.

    --json prints {"path","label","score","top_k":[{"label","score"}],"latency_ms"} per image, or
    {"path","error"} for an image that could not be read. A bad image never stops the batch. With labels that
    include Benign, each result also carries "decision" (malignant or benign at the model's operating point),
    "subtype" and "malignant_score" (1 - p(Benign)). With a model calibrated for it (allx convert --ood), each result also carries "ood" (true: uncertain,
    unlike training images) and "ood_score", and the summary counts the flagged images.
    With --sample ID or --samples-from-folders, each field is first checked for focus, exposure and stain
    colour; a field that fails, is flagged or cannot be read is set aside (with why) and the usable ones give
    one verdict per sample: "B-ALL suspected (subtype, confidence)", "no B-ALL seen" or "inconclusive" with
    the reason. --json then prints one object per field and one {"kind": "sample", ...} per sample; --csv
    has a "kind" column (field or sample).
    Every result, field and sample (a failed image too), is a row of the audit log (--log-db; --no-log for
    none), written before it is shown, with the operator, the image's and the model's sha256 and the runtime.
    Several images run on --threads one-thread interpreters at once: an image's ms is one thread's time, the
    summary's images/s that of them all.
    Exit codes: 0 all classified; 1 some image failed; 2 usage or model error (or an unusable audit log).
    """
    operator, site = check_operator(options.operator, options.site_config)
    edge_model, rejected = load_model(model, options)
    audit = open_run_log(edge_model, options.log_db, operator, site, enabled=not options.no_log)
    label_width = max(5, *(len(label) for label in edge_model.labels)) if edge_model.labels else 5
    if sample is not None or samples_from_folders:
        try:
            failed = classify_as_samples(edge_model, paths, sample, samples_from_folders, recursive, json_lines, csv,
                                         label_width, audit)
        finally:
            if audit is not None:
                audit.close()
        write_explanations(edge_model, paths, True if samples_from_folders else recursive, explain, json_lines)
        raise typer.Exit(1 if failed else 0)
    point = edge_model.manifest.operating_point

    def show(result) -> None:
        probabilities = None if result.prediction is None else result.prediction.probabilities
        decision = field_decision(probabilities, edge_model.labels, point)
        if audit is not None:
            audit.field(result, edge_model.labels, extra=decision_record(decision))
        if json_lines:
            record = {**result_record(result, edge_model.has_ood, edge_model), **decision_record(decision)}
            typer.echo(json.dumps({**record, "model_status": REJECTED} if rejected else record))
        else:
            echo(mark_rejected(result_line(result, label_width, answer_words(decision)), rejected))

    if not json_lines:
        echo(result_header(label_width))
    try:
        results, summary = classify_paths(edge_model, paths, top_k=top_k, recursive=recursive, on_result=show)
    finally:
        if audit is not None:
            audit.close()
    echo(mark_rejected(batch_summary_line(summary, edge_model.has_ood), rejected), err=json_lines)
    if csv is not None:
        write_results_csv(csv, results, edge_model.has_ood, edge_model.sha256, rejected=rejected)
    write_explanations(edge_model, paths, recursive, explain, json_lines)
    raise typer.Exit(1 if summary.failures else 0)


def write_explanations(edge_model, paths, recursive: bool, folder: Path | None, json_lines: bool) -> None:
    """classify --explain: the occlusion maps of the images just classified (none without the option)."""
    if folder is None:
        return
    from allx.edge_runner.explain import explain_files  # 49 inferences per image: loaded only when asked for

    images = [path for path, error in expand_paths(paths, recursive) if error is None]
    written = explain_files(edge_model, images, folder)
    echo(f"{len(written)} occlusion map(s) written to {folder}", err=json_lines)


def classify_as_samples(edge_model, paths, sample_id, from_folders: bool, recursive: bool, json_lines: bool,
                        csv: Path | None, label_width: int, audit=None) -> int:
    """The sample mode of classify: per-field lines, one verdict per sample, a summary; returns failed fields."""

    samples = samples_from_arguments(paths, sample_id, from_folders, recursive)
    for warning in limits_in_use(edge_model.manifest.quality)[1]:
        echo(f"warning: {warning}", err=True)

    def show_field(sample: str, field) -> None:
        if audit is not None:
            audit.sample_field(field, edge_model.labels, sample)
        if json_lines:
            typer.echo(json.dumps({"sample_id": sample, **field.to_dict()}))
        else:
            echo(field_line(field, label_width))

    def show_sample(verdict) -> None:
        if audit is not None:
            audit.sample_verdict(verdict, edge_model.labels)
        typer.echo(json.dumps(verdict.to_dict())) if json_lines else echo(sample_line(verdict))

    if not json_lines:
        echo(result_header(label_width))
    fields, verdicts, summary = classify_samples(edge_model, samples, show_field, show_sample)
    echo(samples_summary_line(summary), err=json_lines)
    if csv is not None:
        write_csv(csv, CSV_HEADER, csv_rows(fields, verdicts))
    return summary.failed


app.command()(review)
app.add_typer(log_app)
app.command()(calibrate)
app.command()(monitor)


@app.command()
@handle_errors
@with_run_options
def camera(
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", help="A .tflite file (allx convert embeds labels and statistics in it) or its folder.",
        show_default=False)] = None,
    source: Annotated[str, typer.Option("--source", "-s", help="Camera index, /dev/videoN, a video file, or picamera2.")] = "0",
    imx500: Annotated[Optional[Path], typer.Option(
        "--imx500", help="The Raspberry Pi AI Camera runs the network itself: the .rpk, or the packerOut.zip of "
        "`allx convert --imx500` (packaged once with imx500-package), with its model.json beside it. Instead of "
        "--model and --source.", show_default=False)] = None,
    every: Annotated[int, typer.Option("--every", help="Classify every Nth frame.")] = 1,
    headless: Annotated[bool, typer.Option("--headless", help="No window: one line per classified frame.")] = False,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Stop after reading N frames.")] = None,
    log: Annotated[Optional[Path], typer.Option("--log", help="CSV of every classified frame, appended to (sessions given the same file keep all their rows, each row names its session).")] = None,
    sample: SampleOption = None,
    *, options: RunOptions,
):
    """Classify a camera feed or a video file.

    With a display: a window with label, confidence and FPS (q quits); headless: one line per
    classified frame. Ends with a summary when the source ends or disconnects, after --max-frames
    frames read, or on Ctrl-C. With --sample, every frame classified is a field row of the audit log and
    the final verdict a sample row (--no-log for none); without it, a live preview, nothing is logged.
    Exit codes: 0 ok; 2 source, usage or model error (or an unusable audit log).
    """
    # a preview logs nothing: the site config is read for a sample only
    operator, site = (check_operator(options.operator, options.site_config) if sample is not None
                      else (options.operator, None))
    if (model is None) == (imx500 is None):
        raise UsageError(f"got {'both --model and --imx500' if model else 'neither --model nor --imx500'}, "
                         "expected one of them")
    frames = None
    if imx500 is not None:
        edge_model, rejected, frames = load_imx500(imx500, options.allow_rejected)
        source = "imx500"
    else:
        edge_model, rejected = load_model(model, options)
    audit = open_run_log(edge_model, options.log_db, operator, site, enabled=sample is not None and not options.no_log)
    session = None if sample is None else SampleSession(edge_model, sample)
    from allx.edge_runner.camera import has_display, run_camera

    display = not headless and has_display()

    def on_frame(result) -> None:
        if audit is not None and result.field is not None:
            audit.sample_field(result.field, edge_model.labels, sample)
        if not display:
            echo(mark_rejected(frame_line(result), rejected))

    try:
        summary = run_camera(edge_model, source, every=every, max_frames=max_frames, log_path=log, display=display,
                             on_frame=on_frame, session=session, rejected=rejected, frames=frames)
        if audit is not None and summary.verdict is not None:
            audit.sample_verdict(summary.verdict, edge_model.labels)
    finally:
        if audit is not None:
            audit.close()
    for warning in summary.warnings:
        echo(f"warning: {warning}", err=True)
    echo(mark_rejected(camera_summary_line(summary, edge_model.has_ood), rejected))
    if summary.ended_by == "interrupted":
        raise typer.Exit(130)


@app.command()
@handle_errors
def bench(
    model: Annotated[list[Path], typer.Option("--model", "-m", help="Model to bench; repeat to compare (first is the reference).")],
    runs: Annotated[int, typer.Option("--runs", help="Timed invoke() calls per model.")] = 100,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed calls first.")] = 10,
    threads: ThreadsOption = None,
    delegate: DelegateOption = "auto",
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder of images for an end-to-end figure (decode + resize + invoke).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON here.")] = None,
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Write a Markdown table here.")] = None,
    labels: LabelsOption = None,
    tta: Annotated[bool, typer.Option("--tta", help="Also time one image with test-time averaging over its 8 "
                                      "dihedral views against one without (quantize + invoke + dequantize).")] = False,
    allow_rejected: AllowRejectedOption = False,
):
    """Benchmark the latency of one or more models side by side.

    Load time, mean/std/min/p50/p90/p99/max, throughput, peak memory, size, runtime, threads,
    delegate, and the machine's facts. Exit codes: 0 ok; 2 usage or model error.
    """
    from allx.edge_runner.bench import bench_models, report_markdown

    report = bench_models(model, runs=runs, warmup=warmup, threads=threads, delegate=delegate, images=images,
                          labels=labels, tta=tta, on_model=(lambda path: echo(f"benchmarking {path} ...", err=True)) if show_progress() else None,
                          allow_rejected=allow_rejected)
    rejected = [result.model for result in report.results if result.model_status == REJECTED]
    for path in rejected:
        echo(f"warning: {path}: {NOTE}", err=True)
    for result in report.results:
        for warning in result.warnings:
            echo(f"warning: {Path(result.model).name}: {warning}", err=True)
    rich_console().print(bench_table(report))
    echo(bench_caption(report))
    for path in rejected:
        echo(f"{path}: {NOTE}")
    document = report.to_dict()
    if json_out is not None:
        write_json(json_out, document)
    if markdown is not None:
        notes = "".join(f"\n- {Path(path).name}: {NOTE}\n" for path in rejected)
        checked_write(markdown, report_markdown(report) + notes)


@app.command()
@handle_errors
def info(
    model: Annotated[Path, typer.Argument(help="A .tflite file or the folder `allx convert` wrote.")],
    labels: LabelsOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
    delegate: DelegateOption = "auto",
):
    """Describe a model and the runtime in use.

    Inputs/outputs (shape, dtype, scale/zero point), op counts, labels, manifest fields, the
    conversion check results. Exit codes: 0 ok; 2 model error.
    """
    from allx.edge_runner.info import describe_model

    description = describe_model(model, labels=labels, delegate=delegate)
    for warning in description.warnings:
        echo(f"warning: {warning}", err=True)
    if json_out:
        typer.echo(json.dumps(dataclasses.asdict(description), indent=2, default=str))
    else:
        for line in info_lines(description):
            echo(line)


@app.command()
@handle_errors
def serve(
    model: ModelOption,
    host: Annotated[str, typer.Option("--host", help="Address to listen on: 127.0.0.1 (this device only), or "
                                      "0.0.0.0 for phones and laptops on the clinic's network.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8080,
    log_db: Annotated[Optional[Path], typer.Option("--log-db", help="Audit log (SQLite); default under the "
                                                   "user's data folder.")] = None,
    new_token: Annotated[bool, typer.Option("--new-token", help="Replace the access token (old links and "
                                            "sessions stop working).")] = False,
    camera: Annotated[str, typer.Option("--camera", help="Camera for stills: an index, /dev/videoN, "
                                        "picamera2, or none.")] = "0",
    max_files: Annotated[int, typer.Option("--max-files", help="Most images in one upload.")] = 20,
    max_file_mb: Annotated[float, typer.Option("--max-file-mb", help="Largest image file accepted, in MB.")] = 20.0,
    allow_host: Annotated[Optional[list[str]], typer.Option(
        "--allow-host", help="A name this device is reached by (e.g. pi.clinic.lan), besides its IP addresses, "
        "localhost and its host name; repeat for more. Other Host headers are refused (DNS rebinding).")] = None,
    threads: ThreadsOption = None,
    delegate: DelegateOption = "auto",
):
    """Serve the sample workflow as a web page and a JSON API (/api/...), for a phone or laptop at the bench.

    Prints http://HOST:PORT/?token=... : open it once, the page then keeps the session in a cookie.
    The token is made on first start and kept (mode 0600) in the user's config folder; every request but
    /health needs it (scripts send it as Authorization: Bearer; /api refuses it in the address).
    Exit codes: 0 stopped with Ctrl-C; 2 usage or model error, a port in use or an unknown --host.
    """
    if not 0 < port < 65536 or max_files < 1 or max_file_mb <= 0:
        raise UsageError(f"got --port {port}, --max-files {max_files}, --max-file-mb {max_file_mb}, "
                         "expected a port in 1..65535 and positive limits")
    from allx.edge_runner.serve import server  # FastAPI and uvicorn load inside server.build_app / run
    from allx.edge_runner.serve.uploads import UploadLimits

    limits = UploadLimits(max_file_bytes=int(max_file_mb * 1024 * 1024), max_files=max_files)
    options = server.ServeOptions(model, host, port, log_db, None if camera.lower() == "none" else camera,
                                  new_token=new_token, limits=limits, allow_hosts=tuple(allow_host or ()))
    # a rejected model is never served (exit 2)
    edge_model, _ = load_model(model, RunOptions(threads=threads, delegate=delegate))
    edge_model.require_labels()
    web_app, token, log_db = server.build_app(options, edge_model)
    listener = server.listen(options)
    for line in server.banner(options, token, edge_model.model_path, log_db):
        echo(line)
    server.run(web_app, options, listener)


def version_callback(value: bool):
    if value:

        typer.echo(f"allx-edge {__version__} ({find_runtime()})")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                               help="Print the version and the interpreter in use.")] = False):
    """allx-edge: run an allx .tflite classifier on a Raspberry Pi / Coral."""
