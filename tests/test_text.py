"""allx.text: the one Markdown table every report and benchmark writes its tables with."""

from __future__ import annotations

from allx.text import markdown_row, markdown_table


def test_a_table_is_its_header_a_rule_of_as_many_columns_and_a_line_per_row():
    lines = markdown_table(("class", "images", "recall"), [("Benign", 50, "90.00%"), ("Pro", 7, "n/a")])
    assert lines == ["| class | images | recall |", "|---|---|---|", "| Benign | 50 | 90.00% |", "| Pro | 7 | n/a |"]


def test_right_aligned_columns_get_a_colon_in_the_rule_and_rows_may_be_a_generator():
    lines = markdown_table(("model", "size MB", "runtime", "ms"), ((name, 1.5, "litert", 2) for name in "ab"),
                           right={1, 3})
    assert lines[1] == "|---|---:|---|---:|"
    assert lines[2:] == ["| a | 1.5 | litert | 2 |", "| b | 1.5 | litert | 2 |"]


def test_no_rows_is_a_header_only_table_and_an_empty_cell_stays_a_cell():
    assert markdown_table(("a", "b"), []) == ["| a | b |", "|---|---|"]
    assert markdown_row(("x", "", "y")) == "| x |  | y |"
    assert markdown_row(("", "float")).count("|") == 3
