"""The HTTP status of each expected failure and of an upload's outcome."""

import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from allx.edge_runner.serve.answers import status_of, upload_status  # noqa: E402
from allx.edge_runner.serve.guard import BodyTooLarge  # noqa: E402
from allx.edge_runner.serve.uploads import UploadRejected  # noqa: E402
from allx.edge_runner.serve.workbench import LogUnavailable, NotFound  # noqa: E402
from allx.errors import DataError, ModelError, UsageError  # noqa: E402


@pytest.mark.parametrize("err, status", [
    (UploadRejected("not an image", 415), 415), (BodyTooLarge(10), 413), (NotFound("S-9"), 404),
    (LogUnavailable("locked"), 503), (DataError("camera gone"), 503), (ModelError("model gone"), 503),
    (UsageError("bad sample ID"), 400),
])
def test_the_client_s_fault_is_4xx_and_the_device_s_503(err, status):
    assert status_of(err) == status


def test_an_upload_is_200_when_any_field_was_added_else_its_refusals_status():
    assert upload_status([{"name": "a.png"}], [{"status": 415}]) == 200
    assert upload_status([], [{"status": 413}, {"status": 413}]) == 413
    assert upload_status([], [{"status": 413}, {"status": 415}]) == 400
    assert upload_status([], [{}]) == 400
