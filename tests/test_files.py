"""allx/files.py: CSV cells a spreadsheet shows as text and never runs as a formula."""

import csv
import io

from allx.files import csv_line, csv_safe, csv_text, write_csv


def test_formula_cells_are_neutralised_and_numbers_kept():
    attacks = ['=HYPERLINK("http://x.example","y")', "+SUM(1,2)", "-2+3", "@cmd", "\tx", "\rx"]
    assert [csv_safe(cell) for cell in attacks] == ["'" + cell for cell in attacks]
    assert [csv_safe(cell) for cell in ("Pro", "a=b", "", -0.5, 3, None)] == ["Pro", "a=b", "", -0.5, 3, None]


def test_every_csv_writer_neutralises_formulas(tmp_path):
    rows = [["=1+1", -0.5, "+SUM(1,2)"], ["ok", 2, "@x"]]
    for text in (csv_text(["a", "b", "c"], rows), csv_line(["a", "b", "c"]) + csv_line(rows[0]) + csv_line(rows[1]),
                 write_csv(tmp_path / "t.csv", ["a", "b", "c"], rows).read_text()):
        parsed = list(csv.reader(io.StringIO(text)))
        assert parsed == [["a", "b", "c"], ["'=1+1", "-0.5", "'+SUM(1,2)"], ["ok", "2", "'@x"]]
