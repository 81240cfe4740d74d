"""What a conversion starts from: the Keras model, its labels, the data and the split (found from a run folder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from allx import layout
from allx.errors import DataError, ModelError
from allx.edge_runner.model import read_labels
from allx.train.crossfit import read_run_point
from allx.train.model_io import load_keras_model
from allx.train.split import load_json
from allx.train.split import make_split, read_split

RUN_SPLIT = layout.SPLIT
RUN_LABELS = layout.LABELS


@dataclass(frozen=True)
class Source:
    model_path: Path
    model: object  # keras.Model
    input_size: tuple[int, int]
    labels: tuple[str, ...]
    data_dir: Path
    split: object  # train.split.Split
    origin: dict  # where the split, data and labels came from (goes into the manifest)
    run_point: object = None  # allx.decision.OperatingPoint from OPERATING_POINT beside the model, if it is this model's


def load_source(model_path: str | Path, data_dir: str | Path | None = None, split_path: str | Path | None = None,
                progress=None) -> Source:
    """Load MODEL.keras and resolve data/split/labels: flags first, else the `allx train` run folder."""

    model_path = Path(model_path)
    model = load_keras_model(model_path)
    input_size = image_input_size(model, model_path)
    split_path, data_dir, origin = locate_data(model_path, data_dir, split_path)
    split = read_or_make_split(split_path, data_dir, progress)
    if split_path is None:
        origin["split"] = "made now by train.split.make_split (seed 42): check images may include ones the model saw"
    origin["split_kind"] = split.kind.value
    labels, origin["labels"] = model_labels(model_path, split)
    check_classes(labels, split.classes, class_count(model, len(labels), model_path))
    run_point, origin["operating_point"] = read_run_point(model_path)
    return Source(model_path, model, input_size, labels, Path(data_dir), split, origin, run_point)


def image_input_size(model, model_path: Path) -> tuple[int, int]:
    shape = tuple(model.inputs[0].shape) if len(model.inputs) == 1 else ()
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[2] is None:
        raise ModelError(f"{model_path}: input shape {shape or [tuple(i.shape) for i in model.inputs]}, "
                         "expected one image input (None, H, W, 3) with fixed H and W")
    return int(shape[1]), int(shape[2])


def class_count(model, label_count: int, model_path: Path) -> int:
    """Width of the probability output (the one output, or the one as wide as the labels)."""
    widths = [int(output.shape[-1]) for output in model.outputs]
    if len(widths) == 1 or label_count in widths:
        return widths[0] if len(widths) == 1 else label_count
    raise ModelError(f"{model_path}: outputs of widths {widths}, expected one with {label_count} classes")


def locate_data(model_path: Path, data_dir, split_path) -> tuple[Path | None, Path, dict]:
    """(split file or None, data dir, origin notes): --split/--data win over the run folder's split.json."""

    origin = {}
    run_split = model_path.parent / RUN_SPLIT
    if split_path is None and run_split.is_file():
        split_path, origin["split"] = run_split, f"{RUN_SPLIT} beside the model"
    elif split_path is not None:
        origin["split"] = "--split"
    if data_dir is None:
        recorded = (load_json(Path(split_path)).get("meta") or {}).get("data_dir") if split_path else None
        if not recorded:
            raise DataError(f"no data for the check: got no --data and no {RUN_SPLIT} with meta.data_dir beside "
                            f"{model_path.name}, expected --data DATA_DIR")
        data_dir, origin["data"] = Path(recorded), "meta.data_dir of the split"
    else:
        origin["data"] = "--data"
    return (Path(split_path) if split_path else None), Path(data_dir), origin


def read_or_make_split(split_path: Path | None, data_dir: Path, progress):
    if split_path is not None:
        return read_split(split_path, data_dir)
    stages = (lambda stage, done, total: progress(done, total)) if progress else None  # make_split names stages
    return make_split(data_dir, progress=stages)


def model_labels(model_path: Path, split) -> tuple[tuple[str, ...], str]:
    beside = model_path.parent / RUN_LABELS
    if beside.is_file():
        return read_labels(beside), f"{RUN_LABELS} beside the model"
    return tuple(split.classes), "classes of the split (no labels.txt beside the model)"


def check_classes(labels: tuple[str, ...], classes: tuple[str, ...], outputs: int) -> None:
    if len(labels) != outputs:
        raise ModelError(f"the model has {outputs} class outputs, got {len(labels)} labels ({', '.join(labels)})")
    if tuple(classes) != tuple(labels):
        order = " (same names, different order)" if sorted(classes) == sorted(labels) else ""
        raise DataError(f"data classes {list(classes)} differ from the model's labels {list(labels)}{order}")
