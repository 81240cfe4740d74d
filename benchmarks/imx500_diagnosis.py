"""Why an IMX500 conversion loses accuracy: the rebuild, MCT's settings, per-layer error, and TFLite int8 beside it.

For one trained model (an `allx train` run): the network is exported as `allx convert --imx500` exports it
(convert.imx500_export), the representative images are drawn as for --int8, and the check images are read
by allx.images and scored by the Keras 3 model. In the tool environment (benchmarks/imx500_diagnosis_tool.py)
the network is rebuilt in Keras 2 and scored as float, then quantized by MCT once per variant (see that
file for the settings a variant may change) and scored; the first variant's activations are compared
layer by layer with the float network's. Here, the same model goes through TFLite int8 on the same
representative images and is scored through EdgeModel, the device's inference path.

Needs the tool environment (`allx tools install imx500`) and the real data; there is no --quick mode.

Usage:
    python benchmarks/imx500_diagnosis.py models/mnv2-gap/model.keras --representative-count 200 \
        --variants rep=50 rep=50,float_weights=1 rep=50,float_head=1 \
        [--check-subset test] [--out benchmarks/results/imx500_diagnosis.json] [--work /tmp/imx500-diagnosis]
    (other settings: rep=200, bias=0, noclip=1; each variant costs one MCT quantization and one scoring)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from allx.convert import imx500_env  # noqa: E402
from allx.convert.imx500 import score_float  # noqa: E402
from allx.convert.imx500_export import describe_model  # noqa: E402
from allx.convert.imx500_network import write_network  # noqa: E402
from allx.convert.modes import MODES  # noqa: E402
from allx.convert.representative import calibration_batches, draw_representative, load_representative  # noqa: E402
from allx.convert.source import load_source  # noqa: E402
from allx.convert.tflite import convert_model, saved_model_of  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.files import write_atomic  # noqa: E402
from allx.text import markdown_table  # noqa: E402

TOOL_SCRIPT = Path(__file__).with_name("imx500_diagnosis_tool.py")
PREPARED = ("network.json", "weights.npz", "representative.npy", "images.npy", "truth.npy", "float.npy")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="MODEL.keras from `allx train`")
    parser.add_argument("--representative-count", type=int, default=200,
                        help="representative train images drawn (a variant's rep=N uses the first N)")
    parser.add_argument("--variants", nargs="+", default=["rep=50", "rep=200"], help="MCT settings to try")
    parser.add_argument("--check-subset", default="test", help="val or test (default test: held-out blocks)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "imx500_diagnosis.json")
    parser.add_argument("--work", type=Path, default=Path("/tmp/imx500-diagnosis"), help="scratch folder")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the images, network and float scores an earlier run left in --work")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def prepare(args) -> tuple:
    """The work folder the tool script reads; (source, representative pixels, truth)."""
    args.work.mkdir(parents=True, exist_ok=True)
    source = load_source(args.model, None, None, None)
    if args.reuse and all((args.work / name).is_file() for name in PREPARED):
        return source, np.load(args.work / "representative.npy"), np.load(args.work / "truth.npy")
    write_network(args.work, *describe_model(source.model))
    drawn = draw_representative(source.split, args.representative_count, 0)
    representative = load_representative(source.data_dir, drawn, source.input_size, None)
    np.save(args.work / "representative.npy", representative)
    scored = score_float(source, args.check_subset, (), args.work, None)
    np.save(args.work / "truth.npy", scored.truth)
    np.save(args.work / "float.npy", scored.float_probabilities)
    return source, representative, scored.truth


def tflite_int8(source, representative: np.ndarray, work: Path, truth: np.ndarray) -> dict:
    """The same model through TFLite int8 on the same representative images, scored through EdgeModel."""
    with saved_model_of(source.model, source.input_size) as saved:
        content = convert_model(saved, MODES["int8"], "uint8", work / "tflite.log", calibration_batches(representative))
    edge = EdgeModel.from_bytes(content, labels=source.labels)
    images = np.load(work / "images.npy", mmap_mode="r")
    top = np.asarray([int(np.argmax(edge.predict(np.asarray(image)))) for image in images])
    reference = np.load(work / "float.npy").argmax(axis=1)
    confusion = np.zeros((len(source.labels),) * 2, int)
    np.add.at(confusion, (truth, top), 1)
    return {"variant": f"TFLite int8 ({len(representative)} representative images)", "images": len(truth),
            "accuracy": float((top == truth).mean()), "agreement": float((top == reference).mean()),
            "confusion": confusion.tolist()}


def main(argv=None) -> None:
    args = parse_args(argv)
    source, representative, truth = prepare(args)
    env = imx500_env.ensure(args.work / "tool-env.log", None)
    subprocess.run([str(env.python), str(TOOL_SCRIPT), str(args.work), *args.variants], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    found = json.loads((args.work / "diagnosis.json").read_text())
    found["variants"].append(tflite_int8(source, representative, args.work, truth))
    document = {"kind": "benchmark", "benchmark": "imx500_diagnosis", "argv": args.argv, "model": str(args.model),
                "labels": list(source.labels), "split_kind": source.origin.get("split_kind"),
                "subset": args.check_subset, **found}
    write_atomic(args.out, json.dumps(document, indent=2) + "\n")
    print("\n".join(markdown_table(("variant", "images", "accuracy", "agreement with float"), (
        (row["variant"], row["images"], f"{row['accuracy']:.4f}", f"{row['agreement']:.4f}")
        for row in found["variants"]))))


if __name__ == "__main__":
    main()
