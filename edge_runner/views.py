"""Text for the terminal: result rows, summaries and tables built from the runner's dataclasses (nothing printed here)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from allx.decision import UNLIKE_TRAINING, Decision
from allx.text import printable

from allx.edge_runner.batch import BatchSummary, ImageResult
from allx.edge_runner.sample import FieldResult, SampleVerdict
from allx.edge_runner.sample_batch import SamplesSummary

if TYPE_CHECKING:  # named in annotations only: classify's start-up does not load the bench, camera or info code
    from rich.table import Table

    from allx.edge_runner.bench import BenchReport
    from allx.edge_runner.camera import CameraSummary, FrameResult
    from allx.edge_runner.info import ModelInfo

PATH_WIDTH = 40
OOD_NOTE = UNLIKE_TRAINING
METADATA_WORDS = {"embedded": "embedded in the .tflite (labels, manifest, statistics)",
                  "model.json": "from model.json beside the model (none embedded)",
                  "none": "none (no allx metadata embedded, no model.json beside the model)"}


def result_header(label_width: int) -> str:
    return f"{'path':<{PATH_WIDTH}}  {'label':<{label_width}}  {'confidence':>10}  {'ms':>8}"


def result_line(result: ImageResult, label_width: int, answer: str = "") -> str:
    """One image's row; a name or message with control characters is escaped, so a row is always one line."""
    if result.prediction is None:
        return printable(f"{result.path:<{PATH_WIDTH}}  FAILED: {result.error}")
    p = result.prediction
    line = f"{result.path:<{PATH_WIDTH}}  {p.label:<{label_width}}  {p.score:>10.1%}  {p.latency_ms:>8.2f}"
    if len(p.top_k) > 1:
        line += "  (" + ", ".join(f"{label} {score:.1%}" for label, score in p.top_k[1:]) + ")"
    if answer:
        line += f"  {answer}"
    if p.ood:
        line += f"  {OOD_NOTE}"
    return printable(line)


def answer_words(decision: Decision | None) -> str:
    """The field's clinical answer, rendered from the decision its record carries ("" without one)."""
    return "" if decision is None else decision.words


def field_line(field: FieldResult, label_width: int) -> str:
    """One field of a sample: label and confidence, its own answer, or why it was set aside."""
    p = field.prediction
    if p is None:
        return printable(f"{field.name:<{PATH_WIDTH}}  FAILED: {field.reason}")
    line = f"{field.name:<{PATH_WIDTH}}  {p.label:<{label_width}}  {p.score:>10.1%}  {p.latency_ms:>8.2f}"
    if field.decision is not None:
        line += f"  {field.decision.words}"
    return printable(line + ("" if field.usable else f"  set aside: {field.reason}"))


def sample_line(verdict: SampleVerdict) -> str:
    """The sample's verdict, the fields it used, and those it set aside with why."""
    aside = "; ".join(f"{Path(name).name} ({why})" for name, why in verdict.fields_set_aside)
    return printable(f"sample {verdict.sample_id}: {verdict.words} -- {len(verdict.fields_used)} field(s) used"
                     + (f", {len(verdict.fields_set_aside)} set aside: {aside}" if aside else ""))


def samples_summary_line(s: SamplesSummary) -> str:
    return (f"{s.samples} sample(s), {s.fields} fields: {s.used} used, {s.failed} failed, {s.rejected_quality} "
            f"rejected by the quality check, {s.flagged_ood} flagged {OOD_NOTE}; {s.inconclusive} sample(s) "
            f"inconclusive ({s.seconds:.2f} s)")


def batch_summary_line(summary: BatchSummary, with_ood: bool) -> str:
    text = (f"{summary.images} images: {summary.classified} classified, {summary.failures} failed, "
            f"{summary.images_per_s:.1f} images/s ({summary.seconds:.2f} s)")
    return text + (f", {summary.flagged_ood} flagged {OOD_NOTE}" if with_ood else "")


def frame_line(result: FrameResult) -> str:
    p = result.prediction
    line = f"frame {result.frame:>6}  {result.time_s:8.2f} s  {p.label}  {p.score:.1%}  {p.latency_ms:.2f} ms"
    if result.field is None:
        return line + (f"  {OOD_NOTE}" if p.ood else "")
    aside = "" if result.field.usable else f"  set aside: {result.field.reason}"
    return printable(line + aside + f"  | sample {result.verdict.sample_id}: {result.verdict.words}")


def camera_summary_line(s: CameraSummary, with_ood: bool = False) -> str:
    latency = (f"latency mean {s.mean_latency_ms:.2f} ms, p95 {s.p95_latency_ms:.2f} ms"
               if s.mean_latency_ms is not None else "no frame classified")
    flagged = with_ood or s.flagged_ood
    line = (f"{s.ended_by}: {s.frames_read} frames read, {s.classified} classified, {latency}, "
            f"{s.fps:.1f} FPS over {s.seconds:.1f} s" + (f", {s.flagged_ood} flagged {OOD_NOTE}" if flagged else ""))
    return line if s.verdict is None else line + "\n" + sample_line(s.verdict)


def bench_table(report: BenchReport) -> Table:
    """Metrics as rows and models as columns, so two or three models fit side by side on a terminal."""
    from rich.table import Table  # only bench draws a table: classify starts without rich

    table = Table(title="allx-edge bench (bare invoke latency, ms)")
    table.add_column("")
    for r in report.results:
        table.add_column(printable(Path(r.model).name), justify="right")
    rows = [("precision", lambda r: str(r.precision)), ("size MB", lambda r: f"{r.file_size_bytes / 1e6:.2f}"),
            ("load ms", lambda r: f"{r.load_ms:.1f}")]
    rows += [(name, lambda r, name=name: f"{getattr(r.latency_ms, name):.2f}")
             for name in ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")]
    rows += [("images/s", lambda r: f"{r.throughput_ips:.1f}"), ("speed vs first", lambda r: f"{r.speed_ratio:.2f}x"),
             ("peak RSS MB", lambda r: "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}"),
             ("end-to-end ms", lambda r: f"{r.end_to_end.latency_ms.mean:.2f}" if r.end_to_end else "-"),
             ("end-to-end img/s", lambda r: f"{r.end_to_end.images_per_s:.1f}" if r.end_to_end else "-"),
             ("TTA predict p50 ms", lambda r: f"{r.tta.tta_ms.p50:.2f}" if r.tta else "-"),
             ("TTA cost", lambda r: f"{r.tta.ratio:.2f}x" if r.tta else "-")]
    for name, value in rows:
        table.add_row(name, *(value(r) for r in report.results))
    return table


def bench_caption(report: BenchReport) -> str:
    m, first = report.machine, report.results[0]
    return (f"{m.cpu_model}, {m.cores} cores, {m.machine}, {m.os}, Python {m.python}; {first.runtime}, "
            f"{first.threads} threads, delegate {first.delegate}; {first.runs} runs after {first.warmup} warm-up")


def info_lines(info: ModelInfo) -> list[str]:
    lines = [f"model     {info.path} ({info.file_size_bytes / 1e6:.2f} MB)", f"sha256    {info.sha256}",
             f"metadata  {METADATA_WORDS.get(info.metadata, info.metadata)}"
             + (f"; running without: {', '.join(info.features_off)}" if info.features_off else ""),
             f"runtime   {info.runtime}, delegate {info.delegate}, "
             f"Edge TPU compiled: {'yes' if info.edgetpu_compiled else 'no'}"]
    for role, tensors in (("input", info.inputs), ("output", info.outputs)):
        for t in tensors:
            quant = f"scale {t.scale:g}, zero point {t.zero_point}" if t.scale else "not quantized"
            lines.append(f"{role:<9} {t.name}  shape {list(t.shape)}  {t.dtype}  {quant}")
    lines.append(f"labels    {', '.join(info.labels) if info.labels else '(none: pass --labels or add labels.txt)'}")
    if info.op_counts is not None:
        lines.append("ops       " + ", ".join(f"{name} x{count}" for name, count in info.op_counts.items()))
    for key, value in info.manifest.items():
        lines.append(f"{key:<9} {value}")
    if info.manifest or info.check:  # a bare .tflite has no card to show
        lines += [f"{line.topic.lower():<16} {line.words}" for line in info.card]
    return lines
