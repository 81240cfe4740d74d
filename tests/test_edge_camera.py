"""`allx-edge camera` on a short generated video file: frame counts, --every, --max-frames, the log, bad sources."""

import csv

import numpy as np
import pytest
from edge_models import tiny_models
from typer.testing import CliRunner

from allx.errors import AllxError, DataError
from allx.edge_runner.camera import frame_pixels, run_camera
from allx.edge_runner.cli import app
from allx.edge_runner.model import EdgeModel

cv2 = pytest.importorskip("cv2")
runner = CliRunner()
FRAMES = 30


@pytest.fixture(scope="module")
def model():
    return EdgeModel.load(tiny_models().int8)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    assert writer.isOpened()
    for i in range(FRAMES):
        frame = np.zeros((64, 64, 3), np.uint8)
        frame[:, :, i % 3] = 40 + 7 * i  # frames differ, so the model is not just fed one image
        writer.write(frame)
    writer.release()
    return path


def test_whole_file_is_classified_and_ends_with_the_source(model, video):
    seen = []
    summary = run_camera(model, str(video), on_frame=seen.append)
    assert (summary.frames_read, summary.classified, summary.ended_by) == (FRAMES, FRAMES, "source ended")
    assert [r.frame for r in seen] == list(range(1, FRAMES + 1))
    assert summary.mean_latency_ms > 0 and summary.p95_latency_ms > 0 and summary.fps > 0


def test_every_and_max_frames(model, video, tmp_path):
    summary = run_camera(model, str(video), every=2, max_frames=9, log_path=tmp_path / "log.csv")
    assert (summary.frames_read, summary.classified, summary.ended_by) == (9, 5, "max frames")
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["frame"]) for r in rows] == [1, 3, 5, 7, 9]
    assert {r["model_sha256"] for r in rows} == {model.sha256}  # every logged frame names the model that ran
    assert not (tmp_path / "log.csv.part").exists()


def test_frames_resized_like_images(model):
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert frame_pixels(frame, model.input_size).shape == (32, 32, 3)


def test_cli_headless_lines_and_summary(video):
    result = runner.invoke(app, ["camera", "-m", str(tiny_models().int8), "--source", str(video), "--headless",
                                 "--every", "3", "--max-frames", "12"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sum(line.startswith("frame") for line in lines) == 4
    assert "max frames: 12 frames read, 4 classified" in lines[-1] and "FPS" in lines[-1]


@pytest.mark.parametrize("source", ["missing.avi", "not-a-video.txt", "9"])
def test_source_that_cannot_be_opened(tmp_path, source):
    (tmp_path / "not-a-video.txt").write_text("hello")
    path = source if source.isdigit() else str(tmp_path / source)
    result = runner.invoke(app, ["camera", "-m", str(tiny_models().int8), "--source", path, "--headless"])
    assert result.exit_code == 2
    *warnings, error = result.stderr.splitlines()  # a lone .tflite without allx metadata: one warning first
    assert error.startswith("error: cannot ") and [w.split(":")[1] for w in warnings] == [" running without"]
    assert "Traceback" not in result.output


def test_bad_every(model, video):
    with pytest.raises(AllxError, match="every=0"):
        run_camera(model, str(video), every=0)


def test_picamera2_absent_is_a_clear_error(model):
    try:
        import picamera2  # noqa: F401
        pytest.skip("picamera2 is installed here")
    except ImportError:
        pass
    with pytest.raises(DataError, match="picamera2 module is not importable"):
        run_camera(model, "picamera2")


def test_ctrl_c_ends_cleanly_with_a_summary(model, video, tmp_path):
    def press_ctrl_c(result):
        if result.frame == 4:
            raise KeyboardInterrupt

    summary = run_camera(model, str(video), log_path=tmp_path / "log.csv", on_frame=press_ctrl_c)
    assert (summary.frames_read, summary.classified, summary.ended_by) == (4, 4, "interrupted")
    assert len(list(csv.DictReader(open(tmp_path / "log.csv")))) == 4  # the log is kept, complete


def test_a_sample_session_gives_a_running_verdict_over_the_frames(model, video):
    from allx.edge_runner.quality import QualityLimits
    from allx.edge_runner.sample import SampleSession

    session = SampleSession(model, "cam-1", quality=QualityLimits(focus_min=1e9))  # every flat frame is "blurred"
    seen = []
    summary = run_camera(model, str(video), max_frames=4, on_frame=seen.append, session=session)
    assert [r.field.usable for r in seen] == [False] * 4 and seen[-1].field.reason.startswith("blurred: focus")
    assert seen[0].verdict.sample_id == "cam-1" and summary.verdict.verdict == "inconclusive"
    assert len(summary.verdict.fields_set_aside) == 4


def test_cli_camera_sample_prints_the_running_and_final_verdict(video):
    result = runner.invoke(app, ["camera", "-m", str(tiny_models().int8), "--source", str(video), "--headless",
                                 "--max-frames", "5", "--sample", "S9"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sum("| sample S9: " in line for line in lines) == 5
    assert lines[-1].startswith("sample S9: ") and "5 field(s) used" in lines[-1]
