"""The multipart body of `allx-edge serve` parsed as it streams: limits on files and on other parts."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from allx.edge_runner.serve.uploads import UploadLimits  # noqa: E402
from serve_clients import png_bytes  # noqa: E402


def test_a_file_over_the_limit_is_counted_not_kept():
    """A 64 MB part streamed in 64 KB chunks: memory stays near the 1 MB limit, and the refusal says its size."""
    import asyncio
    import tracemalloc

    from allx.edge_runner.serve.form import read_files

    chunk, chunks = b"\0" * 65536, 1024

    async def body():
        yield b'--b\r\nContent-Disposition: form-data; name="files"; filename="huge.png"\r\n\r\n'
        for _ in range(chunks):
            yield chunk
        yield b'\r\n--b\r\nContent-Disposition: form-data; name="files"; filename="ok.png"\r\n\r\n'
        yield png_bytes(1, 8) + b"\r\n--b--\r\n"

    tracemalloc.start()
    try:
        uploads = asyncio.run(read_files("multipart/form-data; boundary=b", body(),
                                         UploadLimits(max_file_bytes=1024 * 1024)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [name for name, _ in uploads.files] == ["ok.png"] and uploads.files[0][1] == png_bytes(1, 8)
    assert uploads.refused[0]["status"] == 413
    assert f"got {len(chunk) * chunks:,} bytes, expected at most 1,048,576" in uploads.refused[0]["error"]
    assert peak < 8 * 1024 * 1024


def test_many_form_fields_besides_the_files_are_refused():
    import asyncio

    from allx.edge_runner.serve.form import MAX_OTHER_PARTS, read_files
    from allx.edge_runner.serve.uploads import UploadRejected

    async def body():
        for number in range(MAX_OTHER_PARTS + 1):
            yield f'--b\r\nContent-Disposition: form-data; name="note{number}"\r\n\r\nx\r\n'.encode()
        yield b"--b--\r\n"

    with pytest.raises(UploadRejected, match=f"more than {MAX_OTHER_PARTS} form fields"):
        asyncio.run(read_files("multipart/form-data; boundary=b", body(), UploadLimits()))
