"""`allx-edge`: the Raspberry Pi / Coral runner (classify images or a camera feed, bench, info); no TensorFlow."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from allx.console import exit_codes_help, handle_errors, show_progress, stderr, stdout
from allx import __version__
from allx.edge_runner.batch import classify_paths, result_record, write_results_csv
from allx.edge_runner.bench import bench_models, report_markdown
from allx.edge_runner.camera import has_display, run_camera
from allx.edge_runner.info import describe_model
from allx.edge_runner.model import EdgeModel
from allx.edge_runner.runtime import find_runtime
from allx.edge_runner.views import batch_summary_line, result_header, result_line
from allx.edge_runner.views import bench_caption, bench_table
from allx.edge_runner.views import camera_summary_line, frame_line
from allx.edge_runner.views import info_lines
from allx.files import checked_write, write_json

EXIT_CODES = exit_codes_help(0, 1, 2, 130)

app = typer.Typer(name="allx-edge", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Classify blood-smear images on a Raspberry Pi / Coral with a .tflite model from "
                       f"`allx convert`. {EXIT_CODES}")

ModelOption = Annotated[Path, typer.Option(
    "--model", "-m", help="A .tflite file (allx convert embeds labels and statistics in it) or its folder.")]
LabelsOption = Annotated[Optional[Path], typer.Option(
    "--labels", help="Labels file (one per line); default: the labels embedded in the .tflite, else model.json, "
    "else labels.txt beside the model. Embedded labels win over this file (with a warning).")]
ThreadsOption = Annotated[Optional[int], typer.Option(
    "--threads", "-t", help="Interpreter threads (default: all cores).")]
DelegateOption = Annotated[str, typer.Option(
    "--delegate", help="auto (Edge TPU for a model compiled for it), cpu, or edgetpu.")]
OodThresholdOption = Annotated[Optional[float], typer.Option(
    "--ood-threshold", help="Flag an image 'uncertain: unlike training images' when its out-of-distribution score "
    "is above this (default: the threshold allx convert calibrated, in model.json ood.threshold; higher flags "
    "fewer images).", show_default=False)]


def load_model(model: Path, threads, delegate: str, labels, ood_threshold: float | None = None):
    edge_model = EdgeModel.load(model, threads=threads, delegate=delegate, labels=labels, ood_threshold=ood_threshold)
    for warning in edge_model.warnings:
        stderr.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    return edge_model


def echo(text: str, err: bool = False) -> None:
    (stderr if err else stdout).print(text, markup=False, highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def classify(
    paths: Annotated[list[str], typer.Argument(help="Image files, folders or globs (quote globs).")],
    model: ModelOption,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Show the K most likely labels.")] = 1,
    json_lines: Annotated[bool, typer.Option("--json", help="One JSON object per image on stdout.")] = False,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="Also write the results to this CSV file.")] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Include images in sub-folders.")] = False,
    labels: LabelsOption = None,
    threads: ThreadsOption = None,
    delegate: DelegateOption = "auto",
    ood_threshold: OodThresholdOption = None,
):
    """Classify images: a table of path, label, confidence and ms, then a summary.

    --json prints {"path","label","score","top_k":[{"label","score"}],"latency_ms"} per image, or
    {"path","error"} for an image that could not be read. A bad image never stops the batch.
    With a model calibrated for it (allx convert --ood), each result also carries "ood" (true: uncertain,
    unlike training images) and "ood_score", and the summary counts the flagged images.
    Exit codes: 0 all classified; 1 some image failed; 2 usage or model error.
    """

    edge_model = load_model(model, threads, delegate, labels, ood_threshold)
    label_width = max(5, *(len(label) for label in edge_model.labels)) if edge_model.labels else 5

    def show(result) -> None:
        if json_lines:
            typer.echo(json.dumps(result_record(result, edge_model.has_ood, edge_model)))
        else:
            echo(result_line(result, label_width))

    if not json_lines:
        echo(result_header(label_width))
    results, summary = classify_paths(edge_model, paths, top_k=top_k, recursive=recursive, on_result=show)
    echo(batch_summary_line(summary, edge_model.has_ood), err=json_lines)
    if csv is not None:
        write_results_csv(csv, results, edge_model.has_ood, edge_model.sha256)
    raise typer.Exit(1 if summary.failures else 0)


@app.command()
@handle_errors
def camera(
    model: ModelOption,
    source: Annotated[str, typer.Option("--source", "-s", help="Camera index, /dev/videoN, a video file, or picamera2.")] = "0",
    every: Annotated[int, typer.Option("--every", help="Classify every Nth frame.")] = 1,
    headless: Annotated[bool, typer.Option("--headless", help="No window: one line per classified frame.")] = False,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", help="Stop after reading N frames.")] = None,
    log: Annotated[Optional[Path], typer.Option("--log", help="CSV of every classified frame.")] = None,
    labels: LabelsOption = None,
    threads: ThreadsOption = None,
    delegate: DelegateOption = "auto",
    ood_threshold: OodThresholdOption = None,
):
    """Classify a camera feed or a video file.

    With a display: a window with label, confidence and FPS (q quits); headless: one line per
    classified frame. Ends with a summary when the source ends or disconnects, after --max-frames
    frames read, or on Ctrl-C. Exit codes: 0 ok; 2 source, usage or model error.
    """

    edge_model = load_model(model, threads, delegate, labels, ood_threshold)
    display = not headless and has_display()
    summary = run_camera(edge_model, source, every=every, max_frames=max_frames, log_path=log, display=display,
                         on_frame=None if display else (lambda result: echo(frame_line(result))))
    for warning in summary.warnings:
        echo(f"warning: {warning}", err=True)
    echo(camera_summary_line(summary, edge_model.has_ood))


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
):
    """Benchmark the latency of one or more models side by side.

    Load time, mean/std/min/p50/p90/p99/max, throughput, peak memory, size, runtime, threads,
    delegate, and the machine's facts. Exit codes: 0 ok; 2 usage or model error.
    """

    report = bench_models(model, runs=runs, warmup=warmup, threads=threads, delegate=delegate, images=images,
                          labels=labels, on_model=(lambda path: echo(f"benchmarking {path} ...", err=True)) if show_progress() else None)
    for result in report.results:
        for warning in result.warnings:
            echo(f"warning: {Path(result.model).name}: {warning}", err=True)
    stdout.print(bench_table(report))
    echo(bench_caption(report))
    if json_out is not None:
        write_json(json_out, report.to_dict())
    if markdown is not None:
        checked_write(markdown, report_markdown(report))


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

    description = describe_model(model, labels=labels, delegate=delegate)
    for warning in description.warnings:
        echo(f"warning: {warning}", err=True)
    if json_out:
        typer.echo(json.dumps(dataclasses.asdict(description), indent=2, default=str))
    else:
        for line in info_lines(description):
            echo(line)


def version_callback(value: bool):
    if value:

        typer.echo(f"allx-edge {__version__} ({find_runtime()})")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                               help="Print the version and the interpreter in use.")] = False):
    """allx-edge: run an allx .tflite classifier on a Raspberry Pi / Coral."""
