"""How the out-of-distribution warning is described: one terminal line and report.md's section."""

from __future__ import annotations

from typing import TYPE_CHECKING

from allx.decision import UNLIKE_TRAINING
from allx.evidence import Evidence
from allx.text import markdown_table

if TYPE_CHECKING:
    from allx.convert.ood import OodCalibration


def summary_line(section: dict | None, note: str | None) -> str:
    """One line for `allx convert`'s terminal output: what the warning does, or why it is off."""
    if section is None:
        return f"out-of-distribution warning {note or 'off'}"
    generated = ", ".join(f"{name} {rate:.0%}" for name, rate in section.get("generated_flagged", {}).items())
    return (f"out-of-distribution warning: {section['method']} ({section.get('components')} axes), threshold "
            f"{section['threshold']:.4g} flags {section.get('held_out_flagged', 0):.1%} of "
            f"{section.get('held_out_images')} {section.get('held_out_subset')} images; generated non-smear images "
            f"flagged: {generated}{measured(section.get('evidence'))}")


def measured(record) -> str:
    """"; measured out of group: ..." from a stored evidence record ("" when there is none)."""
    evidence = Evidence.from_dict(record)
    return "" if evidence is None else f"; measured {evidence.words()}"


def report_section(calibration: OodCalibration | None, note: str | None = None) -> str:
    """report.md's out-of-distribution part: the method, the trade-off table, generated images flagged."""
    lines = ["## Out-of-distribution warning", ""]
    if calibration is None:
        note = note or "off"
        return "\n".join(lines + [note[:1].upper() + note[1:] + "."]) + "\n"
    c = calibration
    lines += [f"Method: {c.method} distance of the pooled embedding to the nearest class mean (top {c.components} "
              f"principal axes, shared covariance), fit on {c.fit_images} train+val images through the converted model. "
              f"Threshold {c.threshold:.4g} flags {c.held_out_flagged:.1%} of {c.held_out_images} {c.held_out_subset} "
              f"images (asked: at most {c.flag_rate:.1%}{measured(None if c.evidence is None else c.evidence.to_dict())}); "
              "allx-edge marks such results "
              f"\"{UNLIKE_TRAINING}\" (`--ood-threshold` overrides).", ""]
    lines += markdown_table((f"{c.held_out_subset} images flagged", "threshold"),
                            ((f"{rate:.0%}", f"{value:.4g}") for rate, value in c.tradeoff))
    if c.class_flagged:
        lines += ["", "Flagged per class (a threshold per class, each set out of group to the asked rate): " +
                  ", ".join(f"{name} {record['rate']:.1%} of {record['n']}{interval(record)}"
                            for name, record in c.class_flagged.items()) + "."]
    lines += ["", "Generated non-smear images flagged: " +
              ", ".join(f"{name} {rate:.0%}" for name, rate in c.generated_flagged.items()) + "."]
    return "\n".join(lines) + "\n"


def interval(record: dict) -> str:
    """" (95% interval a-b)" of an expected_rates-style record ("" when it has none)."""
    evidence = Evidence.from_dict(record.get("evidence"))
    if evidence is None or evidence.interval is None:
        return ""
    lo, hi = evidence.interval
    return f" ({lo:.1%}-{hi:.1%})"
