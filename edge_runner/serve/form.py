"""An upload's files read as the request streams in, each kept only up to the per-file limit.

Starlette's `request.form()` spools every file whole (to disk past 1 MB) and the route then read it into
memory before its size could be checked: one refused 300 MB file took the server from 103 to 397 MB.
Here python-multipart (the parser Starlette itself uses) hands over each part's bytes as they arrive;
a file's bytes are kept up to `max_file_bytes` and the rest is only counted, so a file over the limit
costs no more memory than one at the limit, and it is refused with its size. A file past `max_files`
ends the request at once (413), like a request body over its cap (guard.BodyLimit).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header

from allx.edge_runner.serve.uploads import UploadLimits, UploadRejected, display_name, too_large

FILES_FIELD = b"files"
MAX_OTHER_PARTS = 10  # the form's other fields (none is read): a body of thousands of tiny parts is refused


@dataclass
class Part:
    """One part of the form: kept only when it is a file of the `files` field."""

    number: int
    filename: str | None = None
    keep: bool = False
    data: bytearray = field(default_factory=bytearray)
    size: int = 0


@dataclass(frozen=True)
class Uploads:
    """The files within the limit (display name, bytes), and the ones refused for their size."""

    files: list[tuple[str, bytes]]
    refused: list[dict]


class FormReader:
    """python-multipart's callbacks: headers name the part, data is kept up to the limit."""

    def __init__(self, limits: UploadLimits):
        self.limits = limits
        self.parts: list[Part] = []
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""

    def callbacks(self) -> dict:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data}

    def on_part_begin(self) -> None:
        self.parts.append(Part(len(self.parts) + 1))
        self.disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if options.get(b"name") != FILES_FIELD or b"filename" not in options:
            if len(self.parts) - sum(p.keep for p in self.parts) > MAX_OTHER_PARTS:
                raise UploadRejected(f"got more than {MAX_OTHER_PARTS} form fields besides 'files', expected "
                                     "only the images")
            return  # another field of the form: read past, never kept
        part = self.parts[-1]
        part.keep, part.filename = True, options[b"filename"].decode("utf-8", "replace")
        count = sum(p.keep for p in self.parts)
        if count > self.limits.max_files:
            raise UploadRejected(f"got more than {self.limits.max_files} files, expected at most "
                                 f"{self.limits.max_files} at once", 413)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        if not part.keep:
            return
        part.size += end - start
        room = self.limits.max_file_bytes - len(part.data)
        if room > 0:
            part.data += data[start:start + min(room, end - start)]

    def uploads(self) -> Uploads:
        files, refused = [], []
        for part in (p for p in self.parts if p.keep):
            name = display_name(part.filename, f"field-{part.number}")
            if not part.filename and not part.size:
                continue  # the browser's empty file input
            if part.size > self.limits.max_file_bytes:
                refused.append({"name": name, "error": str(too_large(name, part.size, self.limits)), "status": 413})
            else:
                files.append((name, bytes(part.data)))
        return Uploads(files, refused)


async def read_files(content_type: str, stream, limits: UploadLimits) -> Uploads:
    """The `files` of a multipart/form-data body read from `stream` (an async iterator of bytes)."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return Uploads([], [])
    if not options.get(b"boundary"):
        raise UploadRejected("multipart body without a boundary, expected multipart/form-data; boundary=...")
    reader = FormReader(limits)
    parser = MultipartParser(options[b"boundary"], reader.callbacks())
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except FormParserError as err:
        raise UploadRejected(f"malformed multipart body ({err.__class__.__name__}), expected multipart/form-data "
                             "with one or more 'files'") from None
    return reader.uploads()
