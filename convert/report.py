"""report.md: the human-readable account of one conversion (verdict, per-class table, diagnosis)."""

from __future__ import annotations

from allx.text import markdown_table, percent
from allx.convert.check import CheckReport
from allx.convert.gate import gate_markdown


def size_text(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def flip_lines(check: CheckReport) -> list[str]:
    """Whether the changed labels were near-ties of the float model (rounding) or confident ones (damage)."""
    if not check.disagreements:
        return []
    return [f"{check.disagreements} image(s) changed label; median float margin (top-1 minus top-2 probability) "
            f"of those: {check.flip_margin_median:.3f}, of all images: {check.margin_median:.3f}.", ""]


def render_report(manifest: dict, check: CheckReport, model_bytes: int, source_bytes: int,
                  sections: tuple[str, ...] = ()) -> str:
    """Markdown: verdict and failed limits first, then the numbers, then any extra sections (debug, Edge TPU)."""
    verdict = "PASSED" if check.passed else "REJECTED"
    lines = [f"# allx convert: {check.precision} {verdict}", ""]
    if check.failures:
        lines += ["Limits broken (the model was saved as rejected; any model that passed before is untouched):", ""]
        lines += [f"- {failure}" for failure in check.failures] + [""]
    spec = manifest["input"]
    lines += [
        f"- Model file: `{manifest['model_file']}` ({size_text(model_bytes)}; source Keras file "
        f"{size_text(source_bytes)}, {source_bytes / max(model_bytes, 1):.2f}x larger)",
        f"- Source: `{manifest.get('source_model', '?')}` (sha256 {manifest.get('source_model_sha256', '?')[:16]}...)",
        f"- Input: {spec['shape']} {spec['dtype']}, scale {spec['scale']:g}, zero point {spec['zero_point']}",
        f"- Preprocessing: {manifest['preprocessing']}",
        f"- Check subset: {check.subset} ({check.images} images); representative set: "
        f"{manifest.get('representative_count') or 'none (no calibration in this mode)'} train images",
        "",
        "| | float (Keras) | " + check.precision + " (allx-edge path) |",
        "|---|---|---|",
        f"| accuracy | {percent(check.float.accuracy, 2, 'n/a')} | {percent(check.quantized.accuracy, 2, 'n/a')} |",
        f"| malignant sensitivity | {percent(check.float.malignant_sensitivity, 2, 'n/a')} | "
        f"{percent(check.quantized.malignant_sensitivity, 2, 'n/a')} |",
        f"| benign specificity | {percent(check.float.benign_specificity, 2, 'n/a')} | "
        f"{percent(check.quantized.benign_specificity, 2, 'n/a')} |",
        "",
        f"Agreement (same top-1): {check.agreement:.4f} · mean |p_float - p_{check.precision}|: "
        f"{check.mean_abs_prob_diff:.5f} · accuracy drop: {check.drop_pp:.2f} pp · "
        f"latency p50/p95 through edge_runner: {check.latency_ms_p50:.2f}/{check.latency_ms_p95:.2f} ms",
        "",
        *flip_lines(check),
        *markdown_table(("class", "images", "float recall", f"{check.precision} recall", "drop (pp)"), (
            (row.label, row.support, percent(row.float_recall, 2, "n/a"), percent(row.quantized_recall, 2, "n/a"),
             "n/a" if row.drop_pp is None else f"{row.drop_pp:+.2f}") for row in check.per_class)),
    ]
    lines += ["", "Malignant = every class except Benign.", "", "## Gate", "",
              *gate_markdown(check.paired, check.fidelity, check.thresholds)]
    if check.skipped:
        lines += ["", f"Skipped {len(check.skipped)} unreadable image(s):", ""]
        lines += [f"- {reason}" for reason in check.skipped[:20]]
    for section in sections:
        lines += ["", section.rstrip()]
    return "\n".join(lines) + "\n"
