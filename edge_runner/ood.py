"""Hook for the out-of-distribution score: reads the manifest's "ood" section (methods come with issue 7)."""

from __future__ import annotations

from typing import Callable

import numpy as np

Scorer = Callable[[np.ndarray, "np.ndarray | None"], tuple[bool, float]]


def score_max_softmax(threshold: float) -> Scorer:
    """1 - max probability: high when the model spreads its belief over classes."""

    def score(probabilities: np.ndarray, embedding: np.ndarray | None) -> tuple[bool, float]:
        value = float(1.0 - np.max(probabilities))
        return value > threshold, value

    return score


METHODS = {"max_softmax": score_max_softmax}


def make_scorer(manifest: dict) -> tuple[Scorer | None, tuple[str, ...]]:
    """(scorer or None, warnings); None when the manifest has no usable "ood" section."""
    section = manifest.get("ood")
    if not section:
        return None, ()
    method = str(section.get("method", ""))
    threshold = section.get("threshold")
    if method not in METHODS or not isinstance(threshold, (int, float)):
        return None, (f"out-of-distribution method {method!r} (threshold {threshold!r}) is not supported by "
                      f"this allx-edge, expected one of {', '.join(METHODS)}: results are not marked",)
    return METHODS[method](float(threshold)), ()
