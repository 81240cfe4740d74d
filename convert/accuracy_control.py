"""Automatic accuracy control: when int8 fails its gate, keep the most damaging layers in float, then try
int16 activations with int8 weights (TFLite's 16x8 mode), and stop at the first variant that passes.

Like OpenVINO NNCF's quantize_with_accuracy_control, the layers put back to float are those the
QuantizationDebugger ranks worst (convert.debug); the counts double (1, 2, 4, 8) so a few tries cover
a wide range. Every try is converted, then checked through edge_runner.EdgeModel like any candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from allx.errors import ConversionError

FLOAT_LAYER_STEPS = (1, 2, 4, 8)
INT16X8 = "int16x8"
FLOAT_LAYERS = "float-layers"
EDGETPU_FLOAT_NOTE = ("not Edge TPU-ready: layers kept in float run on the CPU (the Edge TPU runs int8 only), "
                      "convert with --edgetpu to keep every layer int8")
EDGETPU_INT16_NOTE = "not Edge TPU-ready: int16 activations (the Edge TPU runs int8 only)"


@dataclass(frozen=True)
class Attempt:
    """One try of accuracy control, measured through EdgeModel (or why it could not be made)."""

    name: str
    variant: str  # "float-layers" or "int16x8"
    float_layers: tuple[str, ...]
    seconds: float
    candidate: object | None = None  # pipeline.Candidate; None when the conversion itself failed
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.candidate is not None and self.candidate.check.passed

    def to_dict(self) -> dict:
        row = {"name": self.name, "variant": self.variant, "float_layers": list(self.float_layers),
               "seconds": round(self.seconds, 2), "passed": self.passed, "note": self.note}
        if self.candidate is not None:
            check = self.candidate.check
            row.update({"size_bytes": len(self.candidate.tflite), "latency_ms_p50": check.latency_ms_p50,
                        "accuracy": check.quantized.accuracy, "drop_bound_pp": check.paired[0].drop_bound_pp
                        if check.paired else None, "agreement": check.fidelity.agreement if check.fidelity else None,
                        "failures": list(check.failures)})
        return row


@dataclass(frozen=True)
class Control:
    """All tries, the one kept (the fastest that passed; else None) and how long it all took."""

    first: object  # the plain int8 Candidate that failed
    attempts: tuple[Attempt, ...]
    seconds: float
    max_tries: int
    notes: tuple[str, ...] = ()  # steps skipped and why (no quantizable layers, a debugger failure)
    edgetpu_problems: tuple[str, ...] = ()  # convert.edgetpu.check_readiness of the chosen model

    @property
    def chosen(self) -> Attempt | None:
        passed = [attempt for attempt in self.attempts if attempt.passed]
        return min(passed, key=lambda a: a.candidate.check.latency_ms_p50) if passed else None

    @property
    def edgetpu_note(self) -> str:
        chosen = self.chosen
        if chosen is None:
            return "no accuracy-controlled model passed"
        return EDGETPU_INT16_NOTE if chosen.variant == INT16X8 else EDGETPU_FLOAT_NOTE

    def to_dict(self) -> dict:
        chosen = self.chosen
        plain = Attempt("int8 (plain)", "int8", (), 0.0, self.first).to_dict()
        return {"int8": plain, "tries": [attempt.to_dict() for attempt in self.attempts], "max_tries": self.max_tries,
                "seconds": round(self.seconds, 2), "chosen": None if chosen is None else chosen.name,
                "variant": None if chosen is None else chosen.variant, "notes": list(self.notes),
                "edgetpu": {"ready": False if chosen else None, "note": self.edgetpu_note,
                            "problems": list(self.edgetpu_problems)}}


def control_accuracy(first, rank_layers: Callable[[], tuple], float_layer_model: Callable[[tuple[str, ...]], bytes],
                     int16x8_model: Callable[[], bytes], check: Callable[[str, bytes], object],
                     max_tries: int) -> Control:
    """Try the ladder until a variant passes or `max_tries` conversions were made.

    rank_layers() -> LayerError tuple, worst first; float_layer_model(names) and int16x8_model() -> .tflite
    bytes; check(name, tflite) -> Candidate. A ConversionError in one step is recorded and the ladder
    goes on, so a debugger failure still leaves the 16x8 try.
    """
    began = time.perf_counter()
    attempts, notes = [], []
    for name, variant, layers, make in ladder(rank_layers, float_layer_model, int16x8_model, notes):
        if len(attempts) >= max_tries:
            notes.append(f"stopped after --max-tries {max_tries} tries")
            break
        started = time.perf_counter()
        try:
            candidate = check(name, make())
        except ConversionError as err:
            attempts.append(Attempt(name, variant, layers, time.perf_counter() - started, None, str(err)))
            continue
        attempts.append(Attempt(name, variant, layers, time.perf_counter() - started, candidate))
        if candidate.check.passed:
            break
    return Control(first, tuple(attempts), time.perf_counter() - began, max_tries, tuple(notes))


def ladder(rank_layers, float_layer_model, int16x8_model, notes: list[str]):
    """(name, variant, float layer names, make) for each step, ranked layers computed once, lazily."""
    try:
        layers = rank_layers()
    except ConversionError as err:
        layers = ()
        notes.append(f"float-layer tries skipped: {err}")
    else:
        if not layers:
            notes.append("float-layer tries skipped: the QuantizationDebugger found no quantized layers to keep in float")
    for count in FLOAT_LAYER_STEPS:
        if count >= len(layers):  # all layers in float is --float32, not a variant of int8
            if layers and count == FLOAT_LAYER_STEPS[0]:
                notes.append(f"float-layer tries skipped: the model has only {len(layers)} quantized layer(s)")
            break
        names = tuple(layer.tensor_name for layer in layers[:count])
        yield f"int8 + {count} float layer{'s' if count > 1 else ''}", FLOAT_LAYERS, names, \
            (lambda names=names: float_layer_model(names))
    yield "int16 activations, int8 weights (16x8)", INT16X8, (), int16x8_model


def control_markdown(control: Control) -> str:
    """report.md: the table of tries, the one kept, its Edge TPU readiness and the time spent."""
    lines = ["## Accuracy control", "",
             f"int8 failed the gate, so up to {control.max_tries} variants were tried, in order, stopping at the "
             "first that passed; the fastest that passed is kept. Each was checked through the allx-edge code.", "",
             "| try | size (MB) | latency p50 (ms) | accuracy | drop bound (pp) | fidelity | gate | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    lines.append(attempt_row(Attempt("int8 (plain)", "int8", (), 0.0, control.first)))
    lines += [attempt_row(attempt) for attempt in control.attempts]
    chosen = control.chosen
    lines += ["", f"Kept: {chosen.name}." if chosen else "No variant passed: the plain int8 model is saved as rejected."]
    if chosen and chosen.float_layers:
        lines.append("Float layers: " + ", ".join(f"`{name}`" for name in chosen.float_layers) + ".")
    lines += [f"Edge TPU: {control.edgetpu_note}" + "".join(f"; {p}" for p in control.edgetpu_problems) + ".",
              f"Accuracy control took {control.seconds:.1f} s "
              f"({len(control.attempts)} of at most {control.max_tries} tries)."]
    lines += [f"- {note}" for note in control.notes]
    return "\n".join(lines)


def attempt_row(attempt: Attempt) -> str:
    if attempt.candidate is None:
        return f"| {attempt.name} | | | | | | conversion failed: {attempt.note} | {attempt.seconds:.1f} |"
    check = attempt.candidate.check
    bound = f"{check.paired[0].drop_bound_pp:.2f}" if check.paired else "n/a"
    fidelity = f"{check.fidelity.agreement:.4f}" if check.fidelity else "n/a"
    return (f"| {attempt.name} | {len(attempt.candidate.tflite) / 1e6:.3f} | {check.latency_ms_p50:.2f} | "
            f"{check.quantized.accuracy:.2%} | {bound} | {fidelity} | {'pass' if check.passed else 'fail'} | "
            f"{attempt.seconds:.1f} |")
