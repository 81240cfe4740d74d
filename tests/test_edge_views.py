"""edge_runner.views: the terminal's rows, summaries and bench table, one line each, user text escaped."""

from edge_models import LABELS, tiny_models

from allx.decision import OperatingPoint, decide
from allx.edge_runner.batch import BatchSummary, ImageResult
from allx.edge_runner.bench import bench_models
from allx.edge_runner.model import Prediction
from allx.edge_runner.sample_batch import SamplesSummary
from allx.edge_runner.views import (OOD_NOTE, PATH_WIDTH, answer_words, batch_summary_line, bench_table,
                                    result_header, result_line, samples_summary_line)

PROBABILITIES = (0.05, 0.1, 0.8, 0.05)


def prediction(top_k: int = 1, ood: bool | None = None) -> Prediction:
    ranked = sorted(zip(LABELS, PROBABILITIES), key=lambda pair: -pair[1])[:top_k]
    return Prediction(ranked[0][0], ranked[0][1], tuple(ranked), PROBABILITIES, 2.5, ood, None if ood is None else 1.0)


def test_the_header_and_a_row_share_their_columns():
    header, row = result_header(6), result_line(ImageResult("cell.png", prediction()), 6)
    assert header.index("label") == row.index("Pre") == PATH_WIDTH + 2
    assert row.split()[1:4] == ["Pre", "80.0%", "2.50"]


def test_a_row_carries_the_runners_up_the_answer_and_the_flag():
    row = result_line(ImageResult("cell.png", prediction(top_k=3, ood=True)), 5, "B-ALL suspected (Pre, 0.95)")
    assert "(Early 10.0%, Benign 5.0%)" in row and "B-ALL suspected (Pre, 0.95)" in row and row.endswith(OOD_NOTE)


def test_a_failed_image_is_one_escaped_line():
    row = result_line(ImageResult("bad\x1b[31m\nname.png", error="unreadable image"), 5)
    assert "FAILED: unreadable image" in row and "\n" not in row and "\x1b" not in row and "\\x1b" in row


def test_the_answer_is_rendered_from_the_decision():
    decision = decide(PROBABILITIES, LABELS, OperatingPoint(0.5, 0.99, chosen_on="val"))
    assert answer_words(decision) == decision.words and decision.words.startswith("B-ALL suspected (Pre")
    assert answer_words(None) == ""


def test_summaries_count_what_happened():
    line = batch_summary_line(BatchSummary(5, 4, 1, 2, 2.0), with_ood=True)
    assert line == f"5 images: 4 classified, 1 failed, 2.0 images/s (2.00 s), 2 flagged {OOD_NOTE}"
    assert "flagged" not in batch_summary_line(BatchSummary(5, 4, 1, 0, 2.0), with_ood=False)
    samples = samples_summary_line(SamplesSummary(2, 7, 4, 1, 1, 1, 1, 0.5))
    assert samples.startswith("2 sample(s), 7 fields: 4 used, 1 failed, 1 rejected by the quality check")
    assert samples.endswith("1 sample(s) inconclusive (0.50 s)")


def test_the_bench_table_has_a_column_per_model():
    model = tiny_models().int8
    table = bench_table(bench_models([model, model], runs=2, warmup=0))
    assert [column.header for column in table.columns] == ["", model.name, model.name]
    assert table.row_count >= 10 and next(iter(table.columns[0].cells)) == "precision"
