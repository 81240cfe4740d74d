"""Benchmark: which gate limits and confidence tell a faithful int8 model from a damaged one at our class sizes?

    python benchmarks/gate_simulation.py            # ~1 minute, writes benchmarks/results/gate_simulation.json
    python benchmarks/gate_simulation.py --quick    # 300 draws at the default confidence only, for the tests

Simulated paired check results, no model: each of the val images of a class goes right->wrong with
probability eps/2 + drop and wrong->right with probability eps/2 (eps = the faithful model's background
discordance; the measured good int8 models here change 0.6-0.8% of val labels, so eps 0.5%, 1% and 2%).
For every (confidence, --max-class-drop, --max-drop) on a grid the accuracy gate of convert.gate is applied
to the draws, and three rates are measured:

- pass_at_0: no class has a true drop, the whole gate passes (target >= 95%);
- fail_class_at_2x: the smallest class (Benign, 76 images) has a true drop of 2 x --max-class-drop (>= 95%);
- fail_overall_at_2x: every class has a true drop of 2 x --max-drop (>= 95%).

The tightest limits meeting all three at every eps are chosen (then the confidence with the widest margin);
they are convert.modes.Thresholds' defaults (a test checks). Fidelity is simulated the same way on the
train+val images. The old rule (observed drops against 1 pp / 2 pp) is measured for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from itertools import product
from pathlib import Path

import numpy as np

from allx.convert.gate import agreement_bound, drop_bound
from allx.convert.modes import DEFAULT_THRESHOLDS

REPO = Path(__file__).resolve().parents[1]
VAL_SIZES = {"Benign": 76, "Early": 148, "Pre": 144, "Pro": 121}  # val subset of the near-duplicate split
FIDELITY_IMAGES = 2770  # train + val of the same split
BACKGROUND = (0.005, 0.01, 0.02)
CONFIDENCES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
CLASS_LIMITS = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
OVERALL_LIMITS = (0.5, 1.0, 1.5, 2.0, 3.0)
TARGET = 0.95


def draw(rng, sizes, drops, eps: float, draws: int):
    """Per class (right->wrong, wrong->right) counts, each an array of `draws`."""
    counts = []
    for size, drop in zip(sizes, drops):
        m = rng.multinomial(size, [eps / 2 + drop, eps / 2, 1 - eps - drop], size=draws)
        counts.append((m[:, 0], m[:, 1]))
    return counts


def gate_fails(counts, sizes, confidence: float, class_limit: float, overall_limit: float):
    """Boolean per draw: the accuracy part of convert.gate fails (any class bound or the overall bound too high)."""
    fails = np.zeros(len(counts[0][0]), bool)
    for (b, c), size in zip(counts, sizes):
        fails |= drop_bound(b, c, size, confidence) * 100 > class_limit + 1e-9
    b_all, c_all = sum(b for b, _ in counts), sum(c for _, c in counts)
    return fails | (drop_bound(b_all, c_all, sum(sizes), confidence) * 100 > overall_limit + 1e-9)


def old_rule_fails(counts, sizes, class_limit: float = 2.0, overall_limit: float = 1.0):
    """The rule before convert.gate: observed drops (b - c) / n against the limits."""
    fails = np.zeros(len(counts[0][0]), bool)
    for (b, c), size in zip(counts, sizes):
        fails |= (b - c) / size * 100 > class_limit + 1e-9
    b_all, c_all = sum(b for b, _ in counts), sum(c for _, c in counts)
    return fails | ((b_all - c_all) / sum(sizes) * 100 > overall_limit + 1e-9)


def rates(seed: int, sizes, eps: float, confidence: float, class_limit: float, overall_limit: float, draws: int,
          rule=gate_fails) -> dict:
    args = (confidence, class_limit, overall_limit) if rule is gate_fails else (class_limit, overall_limit)
    scenarios = {"pass_at_0": [0.0] * len(sizes),
                 "fail_class_at_2x": [2 * class_limit / 100] + [0.0] * (len(sizes) - 1),
                 "fail_overall_at_2x": [2 * overall_limit / 100] * len(sizes)}
    out = {}
    for name, drops in scenarios.items():
        rng = np.random.default_rng(seed)  # common random numbers: grid points differ by the rule, not the luck
        fails = rule(draw(rng, sizes, drops, eps, draws), sizes, *args)
        out[name] = float(1 - fails.mean()) if name == "pass_at_0" else float(fails.mean())
    return out


def fidelity_rates(seed: int, confidence: float, min_agreement: float, draws: int) -> list[dict]:
    """Fidelity gate on FIDELITY_IMAGES: pass rate at a true disagreement of half the limit, fail rate at 2x."""
    limit = 1 - min_agreement
    rows = []
    for true_disagreement, wanted in ((limit / 2, "pass"), (2 * limit, "fail")):
        k = np.random.default_rng(seed).binomial(FIDELITY_IMAGES, true_disagreement, size=draws)
        passed = agreement_bound(k, FIDELITY_IMAGES, confidence) >= min_agreement - 1e-9
        rows.append({"true_disagreement": true_disagreement, "wanted": wanted,
                     "rate": float(passed.mean() if wanted == "pass" else 1 - passed.mean())})
    return rows


def meets(row: dict) -> bool:
    return min(row["pass_at_0"], row["fail_class_at_2x"], row["fail_overall_at_2x"]) >= TARGET


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=20000, help="simulated check sets per grid point")
    parser.add_argument("--quick", action="store_true", help="300 draws, the default confidence only (for the tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gate_simulation.json")
    args = parser.parse_args(argv)
    draws = 300 if args.quick else args.draws
    confidences = (DEFAULT_THRESHOLDS.confidence,) if args.quick else CONFIDENCES
    sizes = list(VAL_SIZES.values())
    grid = []
    for confidence, class_limit, overall_limit in product(confidences, CLASS_LIMITS, OVERALL_LIMITS):
        by_eps = {f"{eps:g}": rates(args.seed, sizes, eps, confidence, class_limit, overall_limit, draws)
                  for eps in BACKGROUND}
        worst = {key: min(r[key] for r in by_eps.values()) for key in next(iter(by_eps.values()))}
        grid.append({"confidence": confidence, "max_class_drop": class_limit, "max_drop": overall_limit,
                     "by_background": by_eps, "worst": worst, "meets_target": meets(worst)})
    passing = [row for row in grid if row["meets_target"]]
    chosen = min(passing, key=lambda r: (r["max_class_drop"], r["max_drop"], -min(r["worst"].values())),
                 default=None)
    old = {f"{eps:g}": rates(args.seed, sizes, eps, 0.0, 2.0, 1.0, draws, rule=old_rule_fails) for eps in BACKGROUND}
    confidence = chosen["confidence"] if chosen else DEFAULT_THRESHOLDS.confidence
    result = {"benchmark": "gate_simulation", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", "benchmarks/gate_simulation.py", *(argv or sys.argv[1:])]),
              "class_sizes": VAL_SIZES, "fidelity_images": FIDELITY_IMAGES, "draws": draws,
              "background_discordance": list(BACKGROUND), "target": TARGET, "chosen": chosen,
              "defaults_in_code": DEFAULT_THRESHOLDS.to_dict(), "old_rule": old,
              "fidelity": fidelity_rates(args.seed, confidence, DEFAULT_THRESHOLDS.min_agreement, draws),
              "grid": grid}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_summary(result)
    print(f"-> {args.out}")


def print_summary(result: dict) -> None:
    chosen = result["chosen"]
    if chosen is None:
        print("no grid point meets the target at every background discordance")
        return
    print(f"chosen: confidence {chosen['confidence']}, --max-class-drop {chosen['max_class_drop']:g} pp, "
          f"--max-drop {chosen['max_drop']:g} pp")
    for eps, row in chosen["by_background"].items():
        print(f"  eps {eps}: pass at 0 {row['pass_at_0']:.3f}, fail class at 2x {row['fail_class_at_2x']:.3f}, "
              f"fail overall at 2x {row['fail_overall_at_2x']:.3f}")
    for eps, row in result["old_rule"].items():
        print(f"  old rule (observed, 1 pp / 2 pp) eps {eps}: pass at 0 {row['pass_at_0']:.3f}")


if __name__ == "__main__":
    main()
