"""The gate's statistics: fidelity to the float model, and an exact paired bound on the accuracy drop.

Two questions, answered separately:

- Fidelity: does the converted model give the float model's top-1 label? No labels are needed, so it
  is measured on every train+val image (thousands, not hundreds); the gate compares an exact
  (Clopper-Pearson) one-sided lower bound on the agreement with --min-agreement.
- Accuracy: is the converted model no worse on labelled held-out images? Only the images whose
  correctness changed carry evidence: b went right->wrong, c went wrong->right. Given b + c such
  discordant images, b is binomial with share theta (McNemar's exact conditional test); the true drop
  is (b + c) / n * (2 theta - 1), and its bound puts the exact one-sided Clopper-Pearson upper bound of
  theta in that formula. No discordant image: no evidence of a drop, bound 0. The gate compares the
  bound, overall and for each class, with --max-drop and --max-class-drop.

scipy's beta quantile gives the exact Clopper-Pearson bounds; scipy is already installed with
scikit-learn (which the check uses), so there is no hand-written binomial inversion to get wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

from allx.convert.modes import Thresholds
from allx.text import markdown_table

OVERALL = "all classes"
EPSILON = 1e-9  # a bound exactly at the limit passes despite float round-off


def upper_share(successes, trials, confidence: float):
    """Exact (Clopper-Pearson) one-sided upper bound on a binomial share; 1 when every trial succeeded."""
    successes, trials = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    failures = trials - successes
    bound = beta.ppf(confidence, successes + 1, np.maximum(failures, 1))
    return np.where(failures <= 0, 1.0, bound)


def binomial_interval(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a binomial share; (0, 1) without trials."""
    if trials <= 0:
        return (0.0, 1.0)
    tail = (1 - level) / 2
    low = 0.0 if successes <= 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes >= trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    return (low, high)


def drop_bound(right_to_wrong, wrong_to_right, images, confidence: float):
    """One-sided upper bound on the true accuracy drop (a fraction) from paired counts (vectorised)."""
    b, c = np.asarray(right_to_wrong, dtype=float), np.asarray(wrong_to_right, dtype=float)
    discordant = b + c
    theta = upper_share(b, discordant, confidence)
    bound = discordant / np.maximum(np.asarray(images, dtype=float), 1) * (2.0 * theta - 1.0)
    return np.where(discordant > 0, bound, 0.0)


def agreement_bound(disagreements, images, confidence: float):
    """One-sided lower bound on the true agreement (a fraction) from disagreements out of images."""
    images = np.asarray(images, dtype=float)
    return np.where(images > 0, 1.0 - upper_share(disagreements, images, confidence), 0.0)


@dataclass(frozen=True)
class PairedCount:
    """One group (all classes, or one class): how correctness changed image by image, and the verdict."""

    label: str
    images: int
    right_to_wrong: int
    wrong_to_right: int
    drop_bound_pp: float
    limit_pp: float
    option: str  # the option that sets the limit, for the failure sentence

    @property
    def passed(self) -> bool:
        return self.drop_bound_pp <= self.limit_pp + EPSILON

    @property
    def observed_drop_pp(self) -> float:
        return (self.right_to_wrong - self.wrong_to_right) / max(self.images, 1) * 100.0

    def verdict(self) -> str:
        """E.g. "Benign: 2 right->wrong, 0 wrong->right of 76; drop bound 2.6 pp (limit 5 pp)"."""
        return (f"{self.label}: {self.right_to_wrong} right->wrong, {self.wrong_to_right} wrong->right of "
                f"{self.images}; drop bound {self.drop_bound_pp:.1f} pp (limit {self.option} {self.limit_pp:g} pp)")

    def to_dict(self) -> dict:
        return {"label": self.label, "images": self.images, "right_to_wrong": self.right_to_wrong,
                "wrong_to_right": self.wrong_to_right, "observed_drop_pp": self.observed_drop_pp,
                "drop_bound_pp": self.drop_bound_pp, "limit_pp": self.limit_pp, "passed": self.passed}


@dataclass(frozen=True)
class Fidelity:
    """Top-1 agreement with the float model on the images the converter may use (never test)."""

    images: int
    disagreements: int
    subsets: str  # e.g. "train+val"
    agreement_bound: float
    min_agreement: float
    thin: bool = False  # so few images that even no changed label could not show min_agreement

    @property
    def agreement(self) -> float:
        return 1.0 - self.disagreements / self.images if self.images else 0.0

    @property
    def passed(self) -> bool:
        """The bound reaches the limit, or no label changed on images too few to show it: a conversion that
        changes nothing is not rejected for lack of evidence (the verdict says the evidence is thin)."""
        return self.agreement_bound >= self.min_agreement - EPSILON or (self.thin and self.disagreements == 0)

    def verdict(self, confidence: float) -> str:
        thin = (f"{self.images} images cannot show agreement >= {self.min_agreement:g} at {confidence:.0%}; "
                if self.thin else "")
        return (f"fidelity: {thin}{self.disagreements} of {self.images} {self.subsets} images changed top-1 label; "
                f"agreement {self.agreement:.4f}, lower bound {self.agreement_bound:.4f} at {confidence:.0%} "
                f"(limit --min-agreement {self.min_agreement:g})")

    def to_dict(self) -> dict:
        return {"images": self.images, "disagreements": self.disagreements, "subsets": self.subsets,
                "agreement": self.agreement, "agreement_bound": self.agreement_bound,
                "min_agreement": self.min_agreement, "thin": self.thin, "passed": self.passed}


def paired_counts(truth: np.ndarray, float_top: np.ndarray, quant_top: np.ndarray, labels: tuple[str, ...],
                  thresholds: Thresholds) -> tuple[PairedCount, ...]:
    """All classes first, then each class with images: right->wrong, wrong->right and the drop bound."""
    float_right, quant_right = float_top == truth, quant_top == truth
    groups = [(OVERALL, np.ones(len(truth), bool), thresholds.max_drop, "--max-drop")]
    groups += [(label, truth == index, thresholds.max_class_drop, "--max-class-drop")
               for index, label in enumerate(labels) if np.any(truth == index)]
    counts = []
    for label, members, limit, option in groups:
        b = int(np.sum(float_right[members] & ~quant_right[members]))
        c = int(np.sum(~float_right[members] & quant_right[members]))
        images = int(members.sum())
        bound = float(drop_bound(b, c, images, thresholds.confidence)) * 100.0
        counts.append(PairedCount(label, images, b, c, bound, limit, option))
    return tuple(counts)


def with_thresholds(paired: tuple[PairedCount, ...], fidelity: Fidelity | None,
                    thresholds: Thresholds) -> tuple[tuple[PairedCount, ...], Fidelity | None]:
    """The same counts judged against other thresholds (bounds at their confidence, their limits)."""
    judged = []
    for count in paired:
        overall = count.option == "--max-drop"
        bound = float(drop_bound(count.right_to_wrong, count.wrong_to_right, count.images, thresholds.confidence))
        judged.append(PairedCount(count.label, count.images, count.right_to_wrong, count.wrong_to_right, bound * 100.0,
                                  thresholds.max_drop if overall else thresholds.max_class_drop, count.option))
    if fidelity is not None:
        fidelity = fidelity_of(fidelity.disagreements, fidelity.images, fidelity.subsets, thresholds)
    return tuple(judged), fidelity


def fidelity_of(disagreements: int, images: int, subsets: str, thresholds: Thresholds) -> Fidelity:
    bound = float(agreement_bound(disagreements, images, thresholds.confidence))
    thin = float(agreement_bound(0, images, thresholds.confidence)) < thresholds.min_agreement - EPSILON
    return Fidelity(images, disagreements, subsets, bound, thresholds.min_agreement, thin)


def failures_of(paired: tuple[PairedCount, ...], fidelity: Fidelity | None, thresholds: Thresholds) -> tuple[str, ...]:
    """One sentence per limit broken, in numbers."""
    failures = [count.verdict() for count in paired if not count.passed]
    if fidelity is not None and not fidelity.passed:
        failures.append(fidelity.verdict(thresholds.confidence))
    return tuple(failures)


def gate_markdown(paired: tuple[PairedCount, ...], fidelity: Fidelity | None, thresholds: Thresholds) -> list[str]:
    """report.md lines: the verdict of every group, passed or not, and how the bounds were made."""
    header = ("group", "images", "right->wrong", "wrong->right", "observed drop (pp)", "drop bound (pp)", "limit (pp)",
              "verdict")
    lines = markdown_table(header, ((count.label, count.images, count.right_to_wrong, count.wrong_to_right,
                                     f"{count.observed_drop_pp:+.2f}", f"{count.drop_bound_pp:.2f}",
                                     f"{count.limit_pp:g}", "pass" if count.passed else "FAIL") for count in paired))
    lines += ["", f"Drop bounds: exact one-sided {thresholds.confidence:.0%} bounds from the images whose correctness "
              "changed (McNemar's conditional binomial, Clopper-Pearson); defaults chosen by "
              "`benchmarks/gate_simulation.py`."]
    if fidelity is not None:
        lines += ["", f"{fidelity.verdict(thresholds.confidence).capitalize()}: {'pass' if fidelity.passed else 'FAIL'}."]
        if fidelity.thin:
            lines += ["", "Too few images to show the agreement limit: give the conversion more train+val images "
                      "(they need no labels), or lower --min-agreement / --confidence knowingly."]
    return lines
