"""What the serve tests share: a model folder, a TestClient over the whole app, an upload, test images."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason='allx-edge serve needs the serve extra: pip install "allx[serve]"')
from fastapi.testclient import TestClient  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.edge_runner.serve.app import create_app  # noqa: E402
from allx.edge_runner.serve.card import describe_loaded  # noqa: E402
from allx.edge_runner.serve.uploads import UploadLimits  # noqa: E402
from allx.edge_runner.serve.workbench import Workbench  # noqa: E402
from edge_models import LABELS, tiny_models  # noqa: E402


TOKEN = "test-token-123"


def png_bytes(seed: int, size: int = 40) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header declares width x height pixels: a few hundred bytes on the wire."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tiny = tiny_models()
    folder = tmp_path_factory.mktemp("model")
    (folder / "model.tflite").write_bytes(tiny.int8.read_bytes())
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return folder


@pytest.fixture
def served(model_dir, tmp_path):
    """(client, workbench) over the tiny model folder, with a log of the test's own; the workbench closed after."""
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db")
    yield client, bench
    bench.close()


def make_client(model_path, log_path, limits=UploadLimits(), capture=None):
    model = EdgeModel.load(model_path)
    bench = Workbench(model, log_path, limits, capture, log_busy_s=0.2)
    client = TestClient(create_app(bench, describe_loaded(model), TOKEN))
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client, bench


@pytest.fixture
def client(model_dir, tmp_path):
    client, bench = make_client(model_dir / "model.tflite", tmp_path / "log.db")
    yield client
    bench.close()


def start(client, sample_id="S-1", operator="ana") -> str:
    response = client.post("/api/samples", json={"sample_id": sample_id, "operator": operator})
    assert response.status_code == 201, response.text
    return response.json()["key"]


def upload(client, key, files):
    parts = [("files", (name, data, "image/png")) for name, data in files]
    return client.post(f"/api/samples/{key}/fields", files=parts)
