"""How allx writes numbers for people (%, pp, ms, MB, images per hour, intervals): one place for every report.

Also the one rule for text that reaches a terminal: `printable` escapes control characters, so a file name
or sample ID carrying ANSI escapes or newlines shows as text instead of moving the cursor or faking a line;
and the one Markdown table (`markdown_table`) that report.md, MODEL_CARD.md, the bench report and the
benchmarks' README tables are written with.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Collection, Iterable, Sequence

from allx.layout import SplitKind


def images_per_hour(latency_ms: float) -> float:
    """Images classified one after another in an hour if each takes `latency_ms`."""
    return 3_600_000.0 / latency_ms if latency_ms > 0 else math.inf


def about(count: float, down: bool = False) -> str:
    """A count to two significant figures with thousands separators: 97,297 -> "97,000".

    down=True rounds down, so a lower bound stays a lower bound."""
    if not math.isfinite(count):
        return "unlimited"
    step = 10 ** max(0, len(str(int(round(count)))) - 2)
    rounded = math.floor(count / step) * step if down else round(count / step) * step
    return f"{rounded:,.0f}"


def percent(fraction: float | None, digits: int = 1, missing: str = "-") -> str:
    return missing if fraction is None else f"{fraction * 100:.{digits}f}%"


def points(pp: float | None, sign: bool = True) -> str:
    """Percentage points; two decimals below 0.1 so a tiny change does not read as 0.0."""
    if pp is None:
        return "-"
    digits = 1 if abs(pp) >= 0.1 or pp == 0 else 2
    return f"{pp:+.{digits}f} pp" if sign else f"{pp:.{digits}f} pp"


def millis(value: float | None) -> str:
    """Milliseconds: one decimal from 10 ms, two from 1 ms, three significant digits below (an accelerator)."""
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 1 else f"{value:.3g}"


def megabytes(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 1 else f"{value:.3g}"


def number(value: float | int | None, digits: int = 1, missing: str = "-") -> str:
    return missing if value is None else f"{value:,.{digits}f}"


def wilson_interval(fraction: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion measured on n items (sound near 0% and 100%, unlike p +- 2 SE)."""
    if n <= 0:
        return 0.0, 1.0
    denominator = 1 + z * z / n
    centre = (fraction + z * z / (2 * n)) / denominator
    half = z * math.sqrt(fraction * (1 - fraction) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_with_interval(fraction: float, n: int | None) -> str:
    if not n:
        return percent(fraction)
    low, high = wilson_interval(fraction, n)
    return f"{percent(fraction)} (95% CI {low * 100:.1f}-{high * 100:.1f}%, n={n})"


def near_duplicates_kept_together(split_kind: str | None) -> bool | None:
    """True when the split kept related images whole (any grouped SplitKind); None if unsaid."""
    if not split_kind:
        return None
    return SplitKind.parse(split_kind).grouped


def printable(text: str, keep: str = "") -> str:
    """`text` with every control or format character (ANSI escape, newline, carriage return, bidi override, ...)
    written as its Python escape (\\x1b, \\n, \\u202e); characters in `keep` (a line break between lines) stay."""
    if text.isprintable():
        return text
    return "".join(ch if ch in keep or unicodedata.category(ch)[0] != "C"
                   else ch.encode("unicode_escape").decode("ascii") for ch in text)


def significant(value: float | int | None, digits: int = 3, missing: str = "-") -> str:
    """A measured number for people: `digits` significant digits, thousands separated, never in exponent
    form (0.6176318 -> "0.618", 351.11 -> "351", 12345.6 -> "12,300"). Whole numbers of that many digits or
    fewer stay as they are."""
    if value is None or not math.isfinite(value):
        return missing
    if isinstance(value, int) and abs(value) < 10 ** digits:
        return f"{value:,}"
    if value == 0:
        return "0"
    rounded = round(value, digits - 1 - math.floor(math.log10(abs(value))))
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))  # 0.9999 -> 1.00, not 1.000
    return f"{rounded:,.{decimals}f}"


def share(count: int, total: int, noun: str = "", digits: int = 3) -> str:
    """A share with its counts: "99.4% (2,156 of 2,169 images)" for noun="images"; "-" of nothing."""
    if not total:
        return "-"
    return f"{significant(100.0 * count / total, digits)}% ({count:,} of {total:,}{' ' + noun if noun else ''})"


def setting(value: float | None, digits: int = 3) -> str:
    """A chosen limit for people: significant digits without trailing zeros (0.99 -> "0.99", 2.0 -> "2")."""
    text = significant(value, digits)
    return text.rstrip("0").rstrip(".") if "." in text else text


def markdown_table(header: Sequence[str], rows: Iterable[Sequence], right: Collection[int] = ()) -> list[str]:
    """A Markdown table's lines: the header, its rule (`---:` right-aligns the columns whose index is in
    `right`) and a line per row. Cells are written as given (str() of each), nothing escaped: callers pass text
    they made; `allx.report` escapes the text it takes from input files before it gets here."""
    rule = "|" + "|".join("---:" if column in right else "---" for column in range(len(header))) + "|"
    return [markdown_row(header), rule, *(markdown_row(row) for row in rows)]


def markdown_row(cells: Sequence) -> str:
    """One line of a Markdown table: "| a | b |"."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"
