"""Sample-level results on real smears: pseudo-samples of consecutive fields through allx-edge's SampleSession.

A converted model folder (`allx convert`, whose model.json carries the operating point, the sample rule
and the quality limits chosen on val) is run on the TEST subset of its split: each class's test images,
in file-number order, cut into pseudo-samples of N consecutive fields (convert/operating.pseudo_samples;
blocks of consecutive file numbers stand in for patients). Every field goes through
SampleSession.add_field exactly as `allx-edge classify --sample` does (quality check, OOD flag, operating
point, aggregation). Reported per N: benign/malignant accuracy, malignant sensitivity, benign specificity
and subtype accuracy over conclusive samples, the inconclusive share, and a plain majority vote of the
fields' argmax labels for comparison.

Usage:
    nice -n 10 python benchmarks/samples.py --model MODEL_DIR --split SPLIT.json --data DATA_DIR
        [--fields 5,3] [--out benchmarks/results/samples.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from allx.convert.operating import pseudo_samples, score_verdicts  # noqa: E402
from allx.decision import benign_index  # noqa: E402
from allx.edge_runner.model import EdgeModel  # noqa: E402
from allx.edge_runner.sample import SampleSession, SampleVerdict  # noqa: E402
from allx.files import write_atomic  # noqa: E402

TARGETS = {"accuracy": 0.99, "specificity": 0.95, "sensitivity": 0.99, "subtype_accuracy": 0.98, "inconclusive": 0.05}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder written by allx convert")
    parser.add_argument("--split", type=Path, required=True, help="the split the model was trained and converted with")
    parser.add_argument("--data", type=Path, required=True, help="the data folder of the split")
    parser.add_argument("--fields", default="5,3", help="fields per pseudo-sample, comma-separated")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "samples.json")
    return parser.parse_args(argv)


def majority(labels: list[str]) -> str:
    return Counter(labels).most_common(1)[0][0]


def run(model: EdgeModel, data: Path, relpaths: list[str], truth: list[int], size: int) -> dict:
    samples = pseudo_samples(relpaths, truth, None, size)
    verdicts: list[SampleVerdict] = []
    vote_right = []
    for k, members in enumerate(samples):
        session = SampleSession(model, f"s{k}")
        fields = [session.add_field(data / relpaths[i]) for i in members]
        verdicts.append(session.verdict())
        labels = [f.prediction.label for f in fields if f.prediction is not None]
        vote_right.append(bool(labels) and majority(labels) == model.labels[truth[members[0]]])
    sample_truth = [truth[m[0]] for m in samples]
    scored = score_verdicts(verdicts, sample_truth, model.labels)
    benign = benign_index(model.labels)
    set_aside = Counter(why.split(":")[0] for v in verdicts for _, why in v.fields_set_aside)
    return {"fields_per_sample": size, "samples": len(samples),
            "malignant_samples": sum(t != benign for t in sample_truth), **scored,
            "majority_vote_accuracy": sum(vote_right) / len(vote_right),
            "majority_vote_benign_accuracy": sum(r for r, t in zip(vote_right, sample_truth) if t == benign)
            / max(1, sum(t == benign for t in sample_truth)),
            "fields_set_aside": dict(set_aside),
            "inconclusive_reasons": dict(Counter(v.reason.split(":")[0] for v in verdicts if v.reason))}


def main(argv=None) -> int:
    args = parse_args(argv)
    split = json.loads(args.split.read_text())
    model = EdgeModel.load(args.model)
    relpaths = list(split["test"])
    truth = [model.labels.index(p.split("/")[0]) for p in relpaths]
    rows = [run(model, args.data, relpaths, truth, int(n)) for n in args.fields.split(",")]
    manifest = model.manifest.document
    command = "python benchmarks/samples.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"kind": "benchmark", "benchmark": "samples", "command": command,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "model": manifest.get("model_file"), "precision": manifest.get("precision"),
              "split_kind": (manifest.get("origin") or {}).get("split_kind"), "test_images": len(relpaths),
              "operating_point": manifest.get("operating_point"), "sample_rule": manifest.get("sample_rule"),
              "targets": TARGETS, "rows": rows}
    write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    for row in rows:
        print(f"{row['fields_per_sample']} fields: {row['samples']} samples, accuracy {row['accuracy']}, sensitivity "
              f"{row['sensitivity']}, specificity {row['specificity']}, subtype {row['subtype_accuracy']}, "
              f"inconclusive {row['inconclusive']:.3f}; majority vote {row['majority_vote_accuracy']:.3f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
