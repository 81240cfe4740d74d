"""edge_runner.info: each figure model.json ships is said with how it was measured."""

from allx.edge_runner.info import shipped_figures
from allx.evidence import Evidence

OUT = Evidence("out-of-group", "sequence", 56, 5, 2604, (0.031, 0.05)).to_dict()
SHARED = Evidence("shares groups with training", "image", 260, 0, 260, (0.98, 1.0)).to_dict()


def test_figures_are_said_with_their_evidence_and_unrecorded_ones_are_left_out():
    manifest = {"ood": {"held_out_flagged": 0.04, "evidence": OUT},
                "sample_rule": {"inconclusive": 0.02},  # an older model.json: no evidence, so no figure line
                "check": {"quantized": {"accuracy": 1.0}}, "check_evidence": {"accuracy": SHARED},
                "expected_rates": {"ood_rate": {"rate": 0.04, "n": 2604, "evidence": OUT}}}
    lines = shipped_figures(manifest)
    assert lines[0] == ("fields flagged unlike training 4.0%, measured out of group: 5 folds over 56 groups (blocks "
                        "of consecutive file numbers per class, a proxy for patients: no patient IDs given), 2,604 "
                        "images; 95% interval 3.1%-5.0%")
    assert lines[1].startswith("int8 accuracy on the check images 100.0%, measured on images that share groups with "
                               "training")
    assert lines[2].startswith("expected ood rate (of 2604 fields) 4.0%, measured out of group")
    assert len(lines) == 3 and shipped_figures({}) == ()
