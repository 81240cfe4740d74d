"""allx.jsonio: the depth check ignores every bracket inside a string and stays linear on a huge string."""

import json
import tracemalloc

import pytest

from allx.errors import ModelError
from allx.jsonio import nesting_depth, parse_json

TRICKY = ['[[{', '\\', '\\"', '\\\\"[', '"]]}', 'a\\\\', '\\\\\\"{{', '\u00e9[\u4e2d]']


def nested(depth: int, leaf):
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("text", TRICKY)
@pytest.mark.parametrize("depth", [0, 1, 5])
def test_brackets_quotes_and_backslashes_inside_strings_do_not_count(text, depth):
    document = json.dumps(nested(depth, {"s": text, "t": [text, text]}) if depth else text)
    assert nesting_depth(document) == (depth + 2 if depth else 0)


def test_a_huge_string_is_measured_in_linear_memory():
    """A 30 MB metadata string needed 3.6 GB with the escape-aware pattern; now a few copies of the text."""
    text = json.dumps({"note": "a\\\"[" * 500_000, "x": [[1]]})
    tracemalloc.start()
    try:
        assert nesting_depth(text) == 3
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(text)


def test_deep_nesting_is_refused_before_parsing():
    with pytest.raises(ModelError, match="nested 100 levels deep, expected at most 64"):
        parse_json("[" * 100 + "]" * 100, "m.json", ModelError)
