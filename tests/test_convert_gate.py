"""convert.gate's statistics on hand-made counts, and the defaults the gate simulation chose."""

import json
from pathlib import Path

import numpy as np
import pytest

from allx.convert.gate import agreement_bound, drop_bound, fidelity_of, paired_counts, upper_share
from allx.convert.modes import DEFAULT_THRESHOLDS, Thresholds

LABELS = ("Benign", "Early", "Pre", "Pro")
RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "gate_simulation.json"


def test_clopper_pearson_upper_bounds():
    # 0 of n: 1 - (1 - confidence)^(1/n), the textbook closed form
    assert upper_share(0, 76, 0.95) == pytest.approx(1 - 0.05 ** (1 / 76))
    assert upper_share(5, 5, 0.8) == 1.0
    # coverage: the bound sits above the true share in at least `confidence` of draws
    rng = np.random.default_rng(0)
    draws = rng.binomial(120, 0.03, size=20000)
    assert np.mean(upper_share(draws, 120, 0.8) >= 0.03) >= 0.8


def test_drop_bound_from_paired_counts():
    assert drop_bound(0, 0, 76, 0.8) == 0.0  # nothing changed: no evidence of a drop
    assert drop_bound(2, 0, 76, 0.8) == pytest.approx(2 / 76)  # every change a loss: the bound is the loss
    # 3 lost, 1 gained: the share of losses among the 4 changes may be as high as its exact bound
    theta = upper_share(3, 4, 0.8)
    assert drop_bound(3, 1, 76, 0.8) == pytest.approx(4 / 76 * (2 * theta - 1))
    assert drop_bound(0, 4, 76, 0.8) < 0  # only gains
    assert np.allclose(drop_bound(np.array([0, 2]), np.array([0, 0]), 76, 0.8), [0, 2 / 76])  # vectorised


def test_verdict_lines_are_in_numbers():
    truth = np.array([0] * 76 + [1] * 148)
    quant = truth.copy()
    quant[:2] = 1  # two Benign images right->wrong
    counts = paired_counts(truth, truth, quant, LABELS, DEFAULT_THRESHOLDS)
    assert [c.label for c in counts] == ["all classes", "Benign", "Early"]  # classes without images are left out
    assert counts[1].verdict() == ("Benign: 2 right->wrong, 0 wrong->right of 76; drop bound 2.6 pp "
                                   "(limit --max-class-drop 5 pp)")
    assert counts[1].passed and counts[1].to_dict()["observed_drop_pp"] == pytest.approx(200 / 76)


def test_a_real_loss_fails_and_noise_passes():
    truth = np.repeat([0, 1, 2, 3], [76, 148, 144, 121])
    noisy = truth.copy()
    noisy[[0, 80, 230]] = 1  # three scattered losses ...
    float_top = truth.copy()
    float_top[[100, 300, 400]] = 0  # ... and three gains (float was wrong there, int8 right)
    assert all(c.passed for c in paired_counts(truth, float_top, noisy, LABELS, DEFAULT_THRESHOLDS))
    damaged = truth.copy()
    damaged[:8] = 1  # 8 of 76 Benign lost (10.5 pp): twice the class limit
    counts = paired_counts(truth, truth, damaged, LABELS, DEFAULT_THRESHOLDS)
    assert not counts[1].passed and "Benign: 8 right->wrong" in counts[1].verdict()


def test_fidelity_bound_and_verdict():
    good = fidelity_of(12, 2770, "train+val", DEFAULT_THRESHOLDS)
    assert good.passed and good.agreement_bound < good.agreement
    assert good.verdict(0.8).startswith("fidelity: 12 of 2770 train+val images changed top-1 label")
    assert not fidelity_of(110, 2770, "train+val", DEFAULT_THRESHOLDS).passed  # 4%: twice the 2% allowed
    assert not fidelity_of(1, 64, "val", Thresholds()).passed  # 64 images cannot show 98% at 80%
    assert agreement_bound(0, 0, 0.8) == 0.0


def test_defaults_are_those_the_simulation_chose():
    result = json.loads(RESULTS.read_text())
    chosen = result["chosen"]
    assert (chosen["confidence"], chosen["max_class_drop"], chosen["max_drop"]) == (
        DEFAULT_THRESHOLDS.confidence, DEFAULT_THRESHOLDS.max_class_drop, DEFAULT_THRESHOLDS.max_drop)
    assert min(chosen["worst"].values()) >= result["target"] == 0.95
    assert all(row["rate"] >= 0.95 for row in result["fidelity"])


def test_simulation_quick_mode_writes_its_json(tmp_path):
    from benchmarks.gate_simulation import main

    main(["--quick", "--out", str(tmp_path / "sim.json")])
    result = json.loads((tmp_path / "sim.json").read_text())
    assert result["benchmark"] == "gate_simulation" and result["grid"] and "old_rule" in result


def test_a_conversion_that_changes_nothing_is_not_rejected_for_want_of_images():
    """40 images (10 per class) with no label changed: too few to show 0.98 at 60%, yet not rejected; the
    verdict says the evidence is thin. One changed label on as few images fails, saying why."""
    nothing = fidelity_of(0, 40, "train+val", DEFAULT_THRESHOLDS)
    assert nothing.thin and nothing.passed and nothing.agreement_bound < 0.98
    assert "40 images cannot show agreement >= 0.98 at 60%" in nothing.verdict(0.6)
    one = fidelity_of(1, 40, "train+val", DEFAULT_THRESHOLDS)
    assert one.thin and not one.passed and "40 images cannot show agreement >= 0.98 at 60%" in one.verdict(0.6)
    views = fidelity_of(0, 320, "train+val (x8 dihedral views)", DEFAULT_THRESHOLDS)
    assert views.passed and not views.thin  # the 8 views of the same 40 images show it


def test_fidelity_uses_dihedral_views_when_train_and_val_are_few():
    from allx.convert.pipeline import FIDELITY_EVIDENCE, fidelity_set
    from allx.train.split import Split

    few = Split(("A", "B"), tuple(f"A/{i}.jpg" for i in range(30)), tuple(f"B/{i}.jpg" for i in range(10)))
    assert fidelity_set(few, 3000, 0).views == 8 and len(fidelity_set(few, 3000, 0).relpaths) == 40
    many = Split(("A",), tuple(f"A/{i}.jpg" for i in range(FIDELITY_EVIDENCE)))
    assert fidelity_set(many, 3000, 0).views == 1
