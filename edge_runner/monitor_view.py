"""The monitor's figures for people: a table, text lines, an inline SVG chart and a self-contained HTML page.

One rendering for the CLI's --html, the web page and `allx report`: the SVG is written here by hand
(no plotting library on the device, nothing fetched when the page opens), every text in it escaped.
"""

from __future__ import annotations

import html

from allx.edge_runner.monitor import (ALARMED, FAMILY_ALPHA, INCONCLUSIVE_RATE, MALIGNANT_RATE, OOD, OVERRIDE,
                                      QUALITY, MonitorReport, Window)

WORDS = {OOD: "unlike training (fields)", QUALITY: "quality rejected (fields)",
         INCONCLUSIVE_RATE: "inconclusive (samples)", OVERRIDE: "overridden by review (reviews)",
         MALIGNANT_RATE: "malignant (conclusive samples)"}
SOURCES = {"site_calibration": "the site's calibration (site_calibration.json)",
           "expected_rates": "model.json expected_rates (measured out of group)",
           "model_card": "what model.json states (OOD flag rate, quality rejected share, sample rule, check)",
           "none": "nothing (no model given): rates only, no limits, no alarms"}
TABLE_HEADER = ("window", "samples", "fields", *(WORDS[name] for name in (*ALARMED, MALIGNANT_RATE)),
                "mean confidence", "quality reasons", "alarms")
PANEL_W, PANEL_H, LEFT, TOP, GAP = 720, 110, 64, 26, 30
INK, LIMIT, ALARM, MUTED = "#0969da", "#cf222e", "#cf222e", "#57606a"
MAX_X_LABELS = 5


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def rate_cell(window: Window, name: str) -> str:
    """"3.3% (1/30) ≤ 13.3%": the rate, its count, and the limit it is judged against."""
    count, n = window.counts[name]
    if not n:
        return "–"
    text = f"{percent(count / n)} ({count}/{n})"
    limit = window.limits.get(name)
    if limit is not None and limit.upper is None:
        text += " too few to alarm"
    elif limit is not None:
        text += f" {'ALARM' if name in window.alarms else 'alarm'} at ≥ {percent(limit.upper)}"
    return text


def table_rows(report: MonitorReport) -> list[tuple[str, ...]]:
    rows = []
    for window in report.windows:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(window.reasons.items())) or "–"
        confidence = "–" if window.mean_confidence is None else f"{window.mean_confidence:.3f}"
        rows.append((window.period, str(len(window.samples)), str(window.fields),
                     *(rate_cell(window, name) for name in (*ALARMED, MALIGNANT_RATE)), confidence, reasons,
                     ", ".join(window.alarms) or "none"))
    return rows


def expected_lines(report: MonitorReport) -> list[str]:
    sources = " and ".join(SOURCES.get(part, part) for part in report.limits_from.split("+"))
    lines = [f"limits from {sources}; a window of an unchanged "
             f"stream raises any alarm with probability <= {FAMILY_ALPHA:.0%} (one-sided binomial limits, "
             "Bonferroni over the rates judged)"]
    lines += [f"expected {WORDS[name]}: {percent(value.rate)} ({value.evidence})"
              for name, value in report.expected.items()]
    return lines


def text_lines(report: MonitorReport) -> list[str]:
    """What `allx-edge monitor` prints: the expectations, then one line per window."""
    lines = [f"monitor: {report.log}: {len(report.windows)} window(s)", *expected_lines(report)]
    for row in table_rows(report):
        period, samples, fields, *rates, confidence, reasons, alarms = row
        cells = "; ".join(f"{word.split(' (')[0]} {cell}" for word, cell in
                          zip((WORDS[name] for name in (*ALARMED, MALIGNANT_RATE)), rates) if cell != "–")
        lines.append(f"{period}: {samples} samples, {fields} fields; {cells}; mean confidence {confidence}"
                     + (f"; quality reasons {reasons}" if reasons != "–" else "")
                     + (f"  ALARM: {alarms}" if alarms != "none" else ""))
    return lines


def alarm_words(report: MonitorReport) -> str | None:
    """One line for a header when the latest window alarms, else None."""
    if not report.latest_alarms:
        return None
    window = report.windows[-1]
    named = ", ".join(f"{WORDS[name].split(' (')[0]} {rate_cell(window, name)}" for name in window.alarms)
    return f"Monitor alarm in the latest window ({window.period}): {named}"


def chart_svg(report: MonitorReport) -> str:
    """One panel per alarmed rate: the window's rate (blue), its upper limit (red, dashed), the expected rate
    (grey, dashed); an alarm is a filled red dot. Each dot's tooltip gives the counts."""
    names = [name for name in ALARMED if any(w.counts[name][1] for w in report.windows)] or [OOD]
    height = TOP + len(names) * (PANEL_H + GAP) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {PANEL_W} {height}" width="100%" '
             f'role="img" aria-label="monitor chart" class="monitor-chart" font-family="sans-serif" font-size="15">']
    for index, name in enumerate(names):
        parts += panel(report, name, TOP + index * (PANEL_H + GAP))
    parts += x_labels(report, TOP + len(names) * (PANEL_H + GAP) + 4)
    parts.append("</svg>")
    return "\n".join(parts)


def panel(report: MonitorReport, name: str, top: int) -> list[str]:
    windows = report.windows
    values = [w.rate(name) for w in windows]
    uppers = [w.limits[name].upper if name in w.limits else None for w in windows]
    expected = report.expected.get(name)
    peak = max([v for v in values + uppers if v is not None] + [expected.rate if expected else 0.0, 0.05])
    peak = min(1.0, peak * 1.1)

    def y(value: float) -> float:
        return round(top + PANEL_H - value / peak * PANEL_H, 1)

    parts = [f'<text x="{LEFT}" y="{top - 6}" fill="{MUTED}">{html.escape(WORDS[name])}</text>',
             f'<rect x="{LEFT}" y="{top}" width="{PANEL_W - LEFT - 8}" height="{PANEL_H}" fill="none" '
             f'stroke="#d0d7de"/>',
             f'<text x="{LEFT - 4}" y="{top + 14}" text-anchor="end" fill="{MUTED}">{percent(peak)}</text>',
             f'<text x="{LEFT - 4}" y="{top + PANEL_H}" text-anchor="end" fill="{MUTED}">0%</text>']
    if expected is not None:
        parts.append(f'<line x1="{LEFT}" x2="{PANEL_W - 8}" y1="{y(expected.rate)}" y2="{y(expected.rate)}" '
                     f'stroke="{MUTED}" stroke-dasharray="2 3"><title>expected {percent(expected.rate)}</title></line>')
    parts += polyline([(x_of(i, len(windows)), y(u)) for i, u in enumerate(uppers) if u is not None], LIMIT, "5 3")
    parts += polyline([(x_of(i, len(windows)), y(v)) for i, v in enumerate(values) if v is not None], INK, "")
    for i, (window, value) in enumerate(zip(windows, values)):
        if value is None:
            continue
        alarm = name in window.alarms
        tip = html.escape(f"{window.period}: {rate_cell(window, name)}")
        parts.append(f'<circle cx="{x_of(i, len(windows))}" cy="{y(value)}" r="{4 if alarm else 2.5}" '
                     f'fill="{ALARM if alarm else INK}" class="{"alarm" if alarm else "point"}"><title>{tip}</title>'
                     "</circle>")
    return parts


def polyline(points: list[tuple[float, float]], colour: str, dashes: str) -> list[str]:
    if not points:
        return []
    dash = f' stroke-dasharray="{dashes}"' if dashes else ""
    coordinates = " ".join(f"{x},{y}" for x, y in points)
    return [f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="1.5"{dash}/>']


def x_of(index: int, count: int) -> float:
    step = (PANEL_W - LEFT - 8) / max(count, 1)
    return round(LEFT + (index + 0.5) * step, 1)


def x_labels(report: MonitorReport, top: int) -> list[str]:
    count = len(report.windows)
    every = max(1, -(-count // MAX_X_LABELS))
    return [f'<text x="{x_of(i, count)}" y="{top + 14}" text-anchor="middle" fill="{MUTED}">'
            f'{html.escape(window.period)}</text>' for i, window in enumerate(report.windows) if i % every == 0]


def html_page(report: MonitorReport, title: str = "allx-edge monitor") -> str:
    """A self-contained page (inline CSS and SVG, nothing fetched): what `allx-edge monitor --html` writes."""
    alarm = alarm_words(report)
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in TABLE_HEADER)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                     for row in table_rows(report))
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in expected_lines(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;margin:1rem;color:#1b1f24}}
table{{border-collapse:collapse;font-size:.85rem}}th,td{{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;white-space:nowrap}}th{{background:#f6f8fa}}
.alarm{{border-left:4px solid #cf222e;background:#fff5f5;padding:.5rem .75rem}}.scroll{{overflow-x:auto}}</style>
</head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(report.log)}: {len(report.windows)} window(s)</p>
{f'<p class="alarm" role="alert">{html.escape(alarm)}</p>' if alarm else ''}
{chart_svg(report)}
<ul>{notes}</ul>
<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></div>
</body></html>
"""
