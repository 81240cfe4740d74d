"""JSON inputs read with limits: a size cap, a nesting cap, bounded integers and finite numbers only.

Python's json module recurses once per nesting level and turns any digit string into an int, so a file
nested 100,000 levels deep or holding a 5,000-digit integer ends in RecursionError or ValueError (a
traceback) instead of a one-line error. `read_json` checks the size and the depth (in linear time and a
few copies of the text's size, whatever the text) before parsing and
parses numbers through hooks that refuse NaN, Infinity and integers beyond 64 bits. `Fields` then
checks the types and ranges of the fields a reader uses, naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np

from allx.errors import AllxError, DataError

MAX_BYTES = 64 * 1024 * 1024  # a split of 100k images is ~5 MB; a manifest or bench file is kilobytes
MAX_DEPTH = 64  # allx's own files nest fewer than 8 levels
MAX_INT_DIGITS = 20  # every integer allx writes fits in 64 bits
# A string once its escapes are gone: one character class repeated, which `re` matches without backtracking
# (the escape-aware pattern '"(?:[^"\\]|\\.)*"' kept a frame per character: 3.6 GB for a 30 MB string).
STRING = re.compile(r'"[^"]*"')
CHUNK = 1 << 20  # brackets are counted a megabyte at a time, so the count's arrays stay small


def read_json(path: str | Path, what: str, error: type[AllxError] = DataError, max_bytes: int = MAX_BYTES):
    """The JSON document in `path` ("got X, expected Y" `error` for a missing, huge, deep or bad file)."""
    return read_json_sha256(path, what, error, max_bytes)[0]


def read_json_sha256(path: str | Path, what: str, error: type[AllxError] = DataError, max_bytes: int = MAX_BYTES):
    """(the JSON document in `path`, sha256 of the very bytes parsed): one read, so what was checked is what
    was hashed."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            raise error(f"{what} {path}: not a regular file, expected a JSON file")
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{what} {path}: got {size} bytes, expected at most {max_bytes}")
        data = path.read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path}: not UTF-8 text, expected JSON") from None
    except OSError as err:
        raise error(f"{what} {path}: cannot be read ({err.strerror or err}), expected a JSON file") from None
    return parse_json(text, f"{what} {path}", error), hashlib.sha256(data).hexdigest()


def parse_json(text: str, source: str, error: type[AllxError] = DataError, max_depth: int = MAX_DEPTH):
    """`text` parsed as JSON after the depth check; numbers must be finite and integers short."""
    depth = nesting_depth(text)
    if depth > max_depth:
        raise error(f"{source}: nested {depth} levels deep, expected at most {max_depth}")
    try:
        return json.loads(text, parse_int=bounded_int, parse_constant=refuse_constant, parse_float=finite_float)
    except json.JSONDecodeError as err:
        raise error(f"{source}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except (ValueError, RecursionError) as err:
        raise error(f"{source}: {err}") from None


def nesting_depth(text: str) -> int:
    """The deepest [ / { nesting of `text`, with string contents ignored (linear, no recursion).

    Escaped backslashes go first, then escaped quotes: every quote left opens or closes a string, so the
    strings can be cut out with a pattern that never backtracks."""
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    skeleton = np.frombuffer(STRING.sub("", unescaped).encode("utf-8", "replace"), dtype=np.uint8)
    depth = deepest = 0
    for start in range(0, len(skeleton), CHUNK):
        part = skeleton[start:start + CHUNK]
        steps = ((part == ord("[")) | (part == ord("{"))).astype(np.int32)
        steps -= ((part == ord("]")) | (part == ord("}"))).astype(np.int32)
        running = depth + np.cumsum(steps)
        deepest, depth = max(deepest, int(running.max())), int(running[-1])
    return deepest


def bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"got an integer of {len(digits)} digits, expected at most {MAX_INT_DIGITS}")
    return int(digits)


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"got the number {text[:20]}, expected a finite number")
    return value


def refuse_constant(name: str):
    raise ValueError(f"got {name}, expected a finite number")


class Fields:
    """Typed, range-checked access to a JSON object; a bad field raises `error` naming file and field."""

    def __init__(self, data, source: str, error: type[AllxError] = DataError, where: str = ""):
        if not isinstance(data, dict):
            raise error(f"{source}: {where.rstrip('.') or 'the document'} is a JSON {type(data).__name__}, "
                        "expected an object")
        self.data, self.source, self.error, self.where = data, source, error, where

    def fail(self, key: str, got, expected: str):
        shown = "nothing" if got is None else f"{type(got).__name__} {json.dumps(got)[:40]}"
        return self.error(f"{self.source}: field {self.where}{key} is {shown}, expected {expected}")

    def value(self, key: str, expected: str, types, optional: bool = False):
        value = self.data.get(key)
        if value is None and optional:
            return None
        allowed = types if isinstance(types, tuple) else (types,)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise self.fail(key, value, expected)
        return value

    def number(self, key: str, optional: bool = False, minimum: float | None = None,
               maximum: float | None = None) -> float | None:
        value = self.value(key, "a number", (int, float), optional)
        if value is None:
            return None
        if not math.isfinite(value) or (minimum is not None and value < minimum) or \
                (maximum is not None and value > maximum):
            bounds = [f">= {minimum:g}"] if minimum is not None else []
            bounds += [f"<= {maximum:g}"] if maximum is not None else []
            raise self.fail(key, value, " ".join(["a finite number", " and ".join(bounds)]).strip())
        return float(value)

    def integer(self, key: str, optional: bool = False, minimum: int | None = None) -> int | None:
        value = self.value(key, "an integer", int, optional)
        if value is not None and minimum is not None and value < minimum:
            raise self.fail(key, value, f"an integer >= {minimum}")
        return value

    def text(self, key: str, optional: bool = False) -> str | None:
        return self.value(key, "a string", str, optional)

    def texts(self, key: str, optional: bool = False) -> tuple[str, ...] | None:
        items = self.value(key, "a list of strings", list, optional)
        if items is None:
            return None
        if not all(isinstance(item, str) for item in items):
            raise self.fail(key, items, "a list of strings")
        return tuple(items)

    def integers(self, key: str, optional: bool = False, minimum: int | None = None) -> tuple[int, ...] | None:
        items = self.value(key, "a list of integers", list, optional)
        if items is None:
            return None
        if not all(isinstance(i, int) and not isinstance(i, bool) and (minimum is None or i >= minimum)
                   for i in items):
            raise self.fail(key, items, "a list of integers" + (f" >= {minimum}" if minimum is not None else ""))
        return tuple(items)

    def child(self, key: str, optional: bool = False) -> "Fields | None":
        value = self.value(key, "an object", dict, optional)
        return None if value is None else Fields(value, self.source, self.error, f"{self.where}{key}.")
