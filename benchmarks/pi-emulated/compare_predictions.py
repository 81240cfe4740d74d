"""Compare two runs' JSON-lines predictions (x86 host vs emulated arm64) value for value, bit for bit.

Usage:
    python compare_predictions.py X86.jsonl ARM.jsonl --roots /host/images /opt/allx-proof/images

Each line is a JSON object with a "path"; paths are matched after removing their run's root folder.
Every field except the timing ones must be identical: floats are compared through their shortest
round-trip text (Python's repr), which is equal exactly when the float64 values are bit-identical.
Exit 0 when every image matched and there was at least one, else 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Timings differ run to run (and under emulation they are meaningless), so they are not compared.
IGNORED_FIELDS = frozenset({"latency_ms", "ms", "elapsed_ms"})


@dataclass(frozen=True)
class Comparison:
    """Outcome of matching two runs image by image."""

    matched: tuple[str, ...]
    differing: tuple[str, ...]
    only_first: tuple[str, ...]
    only_second: tuple[str, ...]

    @property
    def equal(self) -> bool:
        return bool(self.matched) and not (self.differing or self.only_first or self.only_second)


def relative_key(path: str, root: str) -> str:
    """`path` relative to `root` (POSIX text), or the path unchanged when it is not under root."""
    pure, base = PurePosixPath(path), PurePosixPath(root)
    try:
        return str(pure.relative_to(base))
    except ValueError:
        return str(pure)


def parse_lines(text: str, root: str, source: str) -> dict[str, str]:
    """Map relative path -> canonical JSON of the compared fields, for each JSON object line."""
    records = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}:{number}: got invalid JSON ({err.msg}), expected one object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise ValueError(f"{source}:{number}: got {line[:60]!r}, expected an object with a \"path\"")
        compared = {key: value for key, value in record.items() if key not in IGNORED_FIELDS and key != "path"}
        records[relative_key(record["path"], root)] = json.dumps(compared, sort_keys=True)
    return records


def compare_records(first: dict[str, str], second: dict[str, str]) -> Comparison:
    """Pair the two runs by relative path and sort each image into matched / differing / missing."""
    common = sorted(first.keys() & second.keys())
    return Comparison(
        matched=tuple(key for key in common if first[key] == second[key]),
        differing=tuple(key for key in common if first[key] != second[key]),
        only_first=tuple(sorted(first.keys() - second.keys())),
        only_second=tuple(sorted(second.keys() - first.keys())),
    )


def describe(comparison: Comparison, first: dict[str, str], second: dict[str, str]) -> list[str]:
    """Human lines: the verdict, then each difference with both values."""
    verdict = "identical" if comparison.equal else "DIFFERENT"
    lines = [f"{verdict}: {len(comparison.matched)} images equal, {len(comparison.differing)} differ, "
             f"{len(comparison.only_first)} only in the first run, {len(comparison.only_second)} only in the second"]
    for key in comparison.differing:
        lines += [f"  {key}:", f"    first:  {first[key]}", f"    second: {second[key]}"]
    lines += [f"  missing from the second run: {key}" for key in comparison.only_first]
    lines += [f"  missing from the first run: {key}" for key in comparison.only_second]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="JSON lines of the reference run (x86 host)")
    parser.add_argument("second", type=Path, help="JSON lines of the run to check (emulated arm64)")
    parser.add_argument("--roots", nargs=2, default=("", ""), metavar=("FIRST_ROOT", "SECOND_ROOT"),
                        help="image folder of each run, removed from the paths before matching")
    args = parser.parse_args(argv)
    try:
        first = parse_lines(args.first.read_text(), args.roots[0], str(args.first))
        second = parse_lines(args.second.read_text(), args.roots[1], str(args.second))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    comparison = compare_records(first, second)
    print("\n".join(describe(comparison, first, second)))
    return 0 if comparison.equal else 1


if __name__ == "__main__":
    sys.exit(main())
