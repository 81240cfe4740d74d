"""The camera's CSV log: the header once, rows appended across sessions, a log of other columns refused."""

import pytest

from allx.edge_runner.output import StreamedCsv
from allx.errors import OutputError


def test_sessions_append_to_one_log_and_other_columns_are_refused(tmp_path):
    path = tmp_path / "frames.csv"
    for session in ("a", "b"):
        log = StreamedCsv(path, ["session", "label"])
        log.write([session, "Pre"])
        log.close()
    assert path.read_text().splitlines() == ["session,label", "a,Pre", "b,Pre"]
    with pytest.raises(OutputError, match="give a new --log path"):
        StreamedCsv(path, ["frame", "score"])
