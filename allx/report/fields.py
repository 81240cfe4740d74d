"""Typed, checked access to the fields of a JSON input: a wrong field names its file and its path in one line."""

from __future__ import annotations

import json
import math

from allx.errors import AllxError


class ReportInputError(AllxError):
    """An input file that is missing, not JSON, of unknown kind, or lacks a field the report needs."""


class Fields:
    """Typed access to a JSON object; a wrong or missing field raises with the file and the field's path."""

    def __init__(self, data: dict, source: str, where: str = ""):
        self.data, self.source, self.where = data, source, where

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def value(self, key: str, expected: str, types, optional: bool = False):
        value = self.data.get(key)
        if value is None and optional:
            return None
        wrong_type = not isinstance(value, types) or (isinstance(value, bool) and types is not bool)
        if wrong_type:
            got = "nothing" if value is None else f"{type(value).__name__} {json.dumps(value)[:40]}"
            raise ReportInputError(f"{self.source}: field {self.where}{key} is {got}, expected {expected}")
        return value

    def number(self, key: str, optional: bool = False, minimum: float | None = None) -> float | None:
        value = self.value(key, "a number", (int, float), optional)
        if value is not None and not math.isfinite(value):
            raise ReportInputError(f"{self.source}: field {self.where}{key} is {value}, expected a finite number")
        if value is not None and minimum is not None and value < minimum:
            raise ReportInputError(f"{self.source}: field {self.where}{key} is {value}, expected a number >= {minimum:g}")
        return None if value is None else float(value)

    def integer(self, key: str, optional: bool = False) -> int | None:
        return self.value(key, "an integer", int, optional)

    def text(self, key: str, optional: bool = False) -> str | None:
        return self.value(key, "a string", str, optional)

    def flag(self, key: str) -> bool:
        return self.value(key, "true or false", bool)

    def child(self, key: str, optional: bool = False) -> Fields | None:
        value = self.value(key, "an object", dict, optional)
        return None if value is None else Fields(value, self.source, f"{self.where}{key}.")

    def children(self, key: str) -> list[Fields]:
        items = self.value(key, "a list of objects", list)
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ReportInputError(f"{self.source}: field {self.where}{key}[{i}] is {type(item).__name__}, "
                                       "expected an object")
        return [Fields(item, self.source, f"{self.where}{key}[{i}].") for i, item in enumerate(items)]

    def numbers(self, key: str, minimum: float | None = None) -> tuple[float, ...]:
        items = self.value(key, "a list of numbers", list)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and (minimum is None or v >= minimum) for v in items):
            bound = f" >= {minimum:g}" if minimum is not None else ""
            raise ReportInputError(f"{self.source}: field {self.where}{key} holds non-numbers or numbers out of "
                                   f"range, expected finite numbers{bound}")
        return tuple(float(v) for v in items)
