"""The "logreg" head's fit: multinomial logistic regression on standardised features (scikit-learn's
L-BFGS, solved to its optimum rather than stepped by epochs; each feature's spread floored at the int8
step, int8_step), written into the head as fitted: the
standardisation into its per-feature layer (`head_standardize`), the coefficients into its Dense layer,
so the saved Keras model, its int8 conversion and the device compute what was fitted (folding the
standardisation into the Dense kernel instead breaks int8: train.head).

The inverse regularisation C is chosen by log-loss on the validation features (never the test subset), and
the chosen C is then fitted again on train + validation (fit_logistic_head's refit); without validation
features it is DEFAULT_C. Measured on the real data (benchmarks/recipes.py, 5-fold
block CV, EfficientNet-Lite0 multiscale features): this head beat the Adam-trained Dropout -> Dense head
(accuracy 0.981 vs 0.974, benign specificity at a cross-fitted 0.99 point 0.964 vs 0.910).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from allx.errors import UsageError

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_C = 0.3  # the best single C on the block CV; used when there is no validation subset
MAX_ITER = 1000
ABSENT_LOGIT_GAP = 50.0  # a class with no training image: this far below (kept small for int8 ranges)
INT8_LEVELS = 255
MAX_WIDTH = 16384  # wider (e.g. a flattened 7x7x1280 map) would need gigabytes for the solver


def fit_logistic_head(head, train, val, n_classes: int, class_weights: dict | None = None,
                      progress=None, stage: str = "head", refit: bool = True) -> dict:
    """Fit `head` (build_head kind "logreg") on (features, labels, rows) `train`, choosing C on `val` (or
    None); with `refit` (the default) the chosen C is then fitted again on train + val, and that fit goes
    into the head, as scikit-learn's GridSearchCV(refit=True) does. Returns a history: one "epoch" whose
    "loss"/"accuracy" are the head's on the images it was fitted on, "val_loss"/"val_accuracy" those of the
    train-only fit that chose C (on val images it did not see), and the C values tried.

    Why refit: val is then only used to choose C, and the head learns from every image it may. With
    contiguous blocks of file numbers as new patients (benchmarks/recipes.py, EfficientNet-Lite0 multiscale)
    the val block is the one next to the held-out block in acquisition order; fitted on it too, the worst
    fold's benign specificity at the cross-fitted point went from 0.840 to 0.910 (mean 0.956 -> 0.972),
    malignant sensitivity the same (mean 0.987). The cross-fitted operating point (train.crossfit) already
    fits its inner heads on train + val. `class_weights` (computed by the caller from the train labels) are
    used for both fits: val is drawn with the same class shares, so recomputing them would change little."""
    from sklearn.metrics import log_loss

    x, y = rows_of(train)
    if x.shape[1] > MAX_WIDTH:
        raise UsageError(f"--head logreg: got {x.shape[1]} features per image, expected at most {MAX_WIDTH}; "
                         "use --features multiscale (pooled) or another --head")
    val_x, val_y = rows_of(val) if val is not None else (None, None)
    grid = C_GRID if val_x is not None and len(val_x) else (DEFAULT_C,)
    classes = list(range(n_classes))
    tried, best = {}, None
    for done, c in enumerate(grid):
        model = fit_one(x, y, c, class_weights)
        loss = log_loss(val_y, predict(model, val_x, n_classes), labels=classes) if len(grid) > 1 else None
        tried[str(c)] = None if loss is None else round(float(loss), 5)
        if best is None or (loss is not None and loss < best[0]):
            best = (loss, c, model)
        if progress:
            progress(stage, done + 1, len(grid))
    loss, c, chosen = best
    model, fit_x, fit_y = chosen, x, y
    if refit and loss is not None:
        fit_x, fit_y = np.concatenate([x, val_x]), np.concatenate([y, val_y])
        model = fit_one(fit_x, fit_y, c, class_weights)
    set_weights(head, model, n_classes)
    fit_p = predict(model, fit_x, n_classes)
    history = {"loss": [float(log_loss(fit_y, fit_p, labels=classes))],
               "accuracy": [float((fit_p.argmax(1) == fit_y).mean())], "C": [c], "C_tried": tried,
               "converged": [bool(model.converged)], "fitted_on": ["train+val" if model is not chosen else "train"]}
    if loss is not None:
        val_p = predict(chosen, val_x, n_classes)
        history |= {"val_loss": [float(loss)], "val_accuracy": [float((val_p.argmax(1) == val_y).mean())]}
    return history


def rows_of(part) -> tuple[np.ndarray, np.ndarray]:
    features, labels, rows = part
    x = np.asarray(features if rows is None else features[rows], dtype=np.float32)
    y = np.asarray(labels if rows is None else labels[rows])
    return x.reshape(len(x), -1), y


@dataclass(frozen=True)
class Fitted:
    """A standardiser and a logistic regression (scikit-learn's arrays), before folding into the head."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # (classes present, features)
    intercept: np.ndarray
    present: np.ndarray  # the class indices the fit saw
    converged: bool


def fit_one(x: np.ndarray, y: np.ndarray, c: float, class_weights: dict | None) -> Fitted:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x)
    scaler.scale_ = np.maximum(scaler.scale_, int8_step(x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = LogisticRegression(C=c, max_iter=MAX_ITER, class_weight=class_weights).fit(scaler.transform(x), y)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # scikit-learn's binary form: one row for class 1 against class 0
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    return Fitted(scaler.mean_, scaler.scale_, coef, intercept, model.classes_.astype(int), converged)


def int8_step(x: np.ndarray) -> float:
    """The step of an int8 tensor calibrated on these features (their range / 255): the smallest spread a
    standardised feature is given. A feature that varies less is one or two int8 levels on the device,
    so a larger multiplier would only amplify rounding; it would also put the standardisation's
    requantisation scale beyond what XNNPACK's int8 kernels accept (< 256), and the interpreter refuses
    the model. (ResNet50's multiscale features: a third of them vary less than a step, yet the float
    accuracy on the held-out blocks did not change; EfficientNet-Lite0's: none.)"""
    return max(float(np.ptp(x)) / INT8_LEVELS, np.finfo(np.float32).tiny) if x.size else 1.0


def head_weights(model: Fitted, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(multiplier, offset, kernel, bias): the standardisation as x * (1 / scale) + (-mean / scale), then
    the Dense layer; a class absent from the training labels gets a zero kernel and a bias
    ABSENT_LOGIT_GAP below the lowest other one."""
    kernel = np.zeros((len(model.mean), n_classes), dtype=np.float64)
    bias = np.full(n_classes, model.intercept.min() - ABSENT_LOGIT_GAP, dtype=np.float64)
    kernel[:, model.present] = model.coef.T
    bias[model.present] = model.intercept
    return 1.0 / model.scale, -model.mean / model.scale, kernel, bias


def predict(model: Fitted, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities, as the head computes them (the same weights, in float64)."""
    multiplier, offset, kernel, bias = head_weights(model, n_classes)
    z = (x * multiplier + offset) @ kernel + bias
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def set_weights(head, model: Fitted, n_classes: int) -> None:
    """Write the fit into the head's standardisation (a (1, 1, D, 1) depthwise kernel) and Dense layers."""
    multiplier, offset, kernel, bias = head_weights(model, n_classes)
    head.get_layer("head_standardize").set_weights([multiplier.reshape(1, 1, -1, 1).astype(np.float32),
                                                    offset.astype(np.float32)])
    head.get_layer("head_dense").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
