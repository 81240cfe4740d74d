"""Automatic accuracy control: when int8 fails its gate, keep the most damaging layers in float, or try
int16 activations with int8 weights (TFLite's 16x8 mode), and keep the fastest variant that passes.

Like OpenVINO NNCF's quantize_with_accuracy_control, the layers put back to float are those the
QuantizationDebugger ranks worst (convert.debug). The counts N = 1, 2, 4, 8 are searched, not walked:
N = 8 first; when it fails, 16x8 is tried and the search ends; when it passes, fewer float layers are
bisected (N = 2, then N = 1 or N = 4). That assumes keeping more of the worst layers in float is never
worse than keeping fewer, so N = 1, 2, 4 are not tried after N = 8 fails (the report names them as not
tried); every try made is listed whatever its outcome. At most 3 conversions cover all five variants.
Every try is converted, then checked through edge_runner.EdgeModel like any candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from allx.errors import ConversionError, ModelError

FLOAT_LAYER_STEPS = (1, 2, 4, 8)
INT16X8 = "int16x8"
FLOAT_LAYERS = "float-layers"
SEARCH = "most-float-layers-then-bisect"  # --json / model.json code for next_try's order
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
    not_tried: tuple[str, ...] = ()  # variants the search did not need (or could not reach within max_tries)
    edgetpu_problems: tuple[str, ...] = ()  # convert.edgetpu.check_readiness of the chosen model

    @property
    def chosen(self) -> Attempt | None:
        passed = [attempt for attempt in self.attempts if attempt.passed]
        # the fastest (p50); on a tie the one with fewer float layers (more of the model int8)
        return min(passed, key=lambda a: (a.candidate.check.latency_ms_p50, len(a.float_layers))) if passed else None

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
                "search": SEARCH, "not_tried": list(self.not_tried),
                "edgetpu": {"ready": False if chosen else None, "note": self.edgetpu_note,
                            "problems": list(self.edgetpu_problems)}}


def control_accuracy(first, rank_layers: Callable[[], tuple], float_layer_model: Callable[[tuple[str, ...]], bytes],
                     int16x8_model: Callable[[], bytes], check: Callable[[str, bytes], object],
                     max_tries: int) -> Control:
    """Search the variants (next_try) until the search ends or `max_tries` conversions were made.

    rank_layers() -> LayerError tuple, worst first; float_layer_model(names) and int16x8_model() -> .tflite
    bytes; check(name, tflite) -> Candidate. A try that cannot be converted or loaded is recorded as a failed
    try and the search goes on, so a failed 8-float-layer conversion still leaves the 16x8 try.
    """
    began = time.perf_counter()
    notes: list[str] = []
    layers = ranked_layers(rank_layers, notes)
    counts = tuple(count for count in FLOAT_LAYER_STEPS if count < len(layers))  # all in float is --float32
    attempts: list[Attempt] = []
    outcomes: dict[int | str, bool] = {}
    while (step := next_try(counts, outcomes)) is not None:
        if len(attempts) >= max_tries:
            notes.append(f"stopped after --max-tries {max_tries} tries")
            break
        names = () if step == INT16X8 else tuple(layer.tensor_name for layer in layers[:step])
        make = int16x8_model if step == INT16X8 else (lambda names=names: float_layer_model(names))
        attempts.append(make_attempt(step, names, make, check))
        outcomes[step] = attempts[-1].passed
    not_tried = tuple(variant_name(step) for step in (*counts, INT16X8) if step not in outcomes)
    if counts and outcomes.get(counts[-1]) is False and len(counts) > 1:
        notes.append(f"{', '.join(map(str, counts[:-1]))} float layer(s) not tried: assumed no better than "
                     f"{counts[-1]}, which failed")
    return Control(first, tuple(attempts), time.perf_counter() - began, max_tries, tuple(notes), not_tried=not_tried)


def next_try(counts: tuple[int, ...], outcomes: dict[int | str, bool]) -> int | str | None:
    """The next variant (a float-layer count, or INT16X8) given the outcomes so far; None when the search is over.

    The most float layers first; if they fail (or there are none to keep), 16x8 and stop. If they pass,
    bisect for the fewest that pass between the largest count that failed and the smallest that passed.
    """
    if not counts or outcomes.get(counts[-1]) is False:
        return None if INT16X8 in outcomes else INT16X8
    if counts[-1] not in outcomes:
        return counts[-1]
    low = max((i for i, count in enumerate(counts) if outcomes.get(count) is False), default=-1) + 1
    high = min(i for i, count in enumerate(counts) if outcomes.get(count))
    return counts[(low + high) // 2] if low < high else None


def make_attempt(step: int | str, names: tuple[str, ...], make: Callable[[], bytes], check) -> Attempt:
    """Convert and check one variant; a ConversionError, or a ModelError from an interpreter that refuses the
    converted bytes (e.g. a float/int8 boundary whose quantization would overflow), becomes a failed try."""
    name, variant = variant_name(step), (INT16X8 if step == INT16X8 else FLOAT_LAYERS)
    started = time.perf_counter()
    try:
        candidate = check(name, make())
    except (ConversionError, ModelError) as err:
        return Attempt(name, variant, names, time.perf_counter() - started, None, str(err))
    return Attempt(name, variant, names, time.perf_counter() - started, candidate)


def variant_name(step: int | str) -> str:
    if step == INT16X8:
        return "int16 activations, int8 weights (16x8)"
    return f"int8 + {step} float layer{'s' if step > 1 else ''}"


def ranked_layers(rank_layers: Callable[[], tuple], notes: list[str]) -> tuple:
    """The debugger's layers, worst first; () with a note when it failed or found too few to keep in float."""
    try:
        layers = rank_layers()
    except ConversionError as err:
        notes.append(f"float-layer tries skipped: {err}")
        return ()
    if not layers:
        notes.append("float-layer tries skipped: the QuantizationDebugger found no quantized layers to keep in float")
    elif len(layers) <= FLOAT_LAYER_STEPS[0]:
        notes.append(f"float-layer tries skipped: the model has only {len(layers)} quantized layer(s)")
    return layers


def control_markdown(control: Control) -> str:
    """report.md: the table of tries, the one kept, its Edge TPU readiness and the time spent."""
    lines = ["## Accuracy control", "",
             f"int8 failed the gate, so variants were searched (at most {control.max_tries} tries): "
             f"{FLOAT_LAYER_STEPS[-1]} float layers first (or the most the model allows); if they failed, 16x8 and stop; if they passed, fewer float "
             "layers by bisection, assuming more float layers never do worse (every try made is listed below, "
             "whatever it showed). The fastest (p50) that passed is kept. Each was checked through the allx-edge "
             "code.", "",
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
    if control.not_tried:
        lines.append("Not tried: " + "; ".join(control.not_tried) + ".")
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
