"""Conversion modes as data, the options each allows, and validation of a request before any work."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from allx import layout
from allx.decision import DEFAULT_TARGET_SENSITIVITY, check_target
from allx.errors import UsageError

DEFAULT_REPRESENTATIVE_COUNT = 200  # see README "Representative set size": accuracy flat from ~100 images up
CHECK_SUBSETS = ("val", "test")
DEFAULT_FIDELITY_IMAGES = 3000  # agreement with the float model: every train+val image of the ALL data set (~2,770)
DEFAULT_MAX_TRIES = 4  # accuracy control: its search (8 float layers, then 16x8 or a bisection) needs at most 3
DEFAULT_FLAG_RATE = 0.04  # OOD: val images flagged; 0.05 let ResNet50's test rate reach 5.2 % (sampling noise)


@dataclass(frozen=True)
class Mode:
    """One TFLite precision: what the converter does and which options make sense with it."""

    name: str
    summary: str
    io_choices: tuple[str, ...]  # allowed --io values; the first is the default
    needs_representative: bool  # calibration data for activations
    fully_integer: bool  # every op int8: the only kind the Edge TPU can run
    tflite: bool = True  # False: another converter (convert.imx500), so TFLite-only options do not apply

    @property
    def default_io(self) -> str:
        return self.io_choices[0]

    @property
    def file_name(self) -> str:
        return layout.tflite_name(self.name) if self.tflite else layout.IMX500_PACKAGE


MODES: dict[str, Mode] = {
    "float32": Mode("float32", "no quantization (reference)", ("float",), False, False),
    "float16": Mode("float16", "float16 weights, float32 compute", ("float",), False, False),
    "dynamic": Mode("dynamic", "int8 weights, float activations (dynamic range)", ("float",), False, False),
    "int8": Mode("int8", "int8 weights and activations, TFLITE_BUILTINS_INT8 only", ("uint8", "int8", "float"),
                 True, True),
    "imx500": Mode("imx500", "Raspberry Pi AI Camera (Sony IMX500): MCT int8 in the tool environment, then "
                   "Sony's imxconv-tf", ("uint8",), True, True, tflite=False),
}
# TFLite-only options: named with a mode whose `tflite` is False, they are refused rather than ignored.
TFLITE_ONLY = ("--io", "--debug", "--float-layers", "--edgetpu", "--ood", "--ood-flag-rate", "--no-accuracy-control",
               "--max-tries")


@dataclass(frozen=True)
class Thresholds:
    """The accuracy gate: limits on what quantization may cost, checked against one-sided bounds (convert.gate).

    The defaults are the one place these numbers live (the CLI's --help shows them). They were chosen by
    benchmarks/gate_simulation.py at this data set's val class sizes (76/148/144/121): a model whose true
    drop is 0 passes >= 95% of the time and one whose true drop is twice a limit fails >= 95% of the time.
    """

    max_drop: float = 1.5  # percentage points of overall accuracy (bound on the true drop)
    max_class_drop: float = 5.0  # percentage points of any one class's recall (bound on the true drop)
    min_agreement: float = 0.98  # fraction of train+val images with the float model's top-1 label (lower bound)
    confidence: float = 0.6  # one-sided confidence of those bounds

    def to_dict(self) -> dict:
        return {"max_drop_pp": self.max_drop, "max_class_drop_pp": self.max_class_drop,
                "min_agreement": self.min_agreement, "confidence": self.confidence}


DEFAULT_THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class ConvertOptions:
    """A validated conversion request: every field already checked and resolved."""

    mode: Mode
    io: str
    representative_count: int | None  # None: the default (DEFAULT_REPRESENTATIVE_COUNT, at most the train subset)
    check_subset: str | None  # None: val if the split has one, else test
    thresholds: Thresholds = field(default_factory=Thresholds)
    debug: bool = False
    float_layers: int = 0
    edgetpu: bool = False
    seed: int = 0
    ood: bool | None = None  # out-of-distribution warning: None = on when the model's layout allows it
    ood_flag_rate: float | None = None  # held-out fraction the OOD threshold flags; None: convert.ood's default
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY  # malignant sensitivity the operating point must reach
    accuracy_control: bool = True  # int8 failed: keep damaging layers in float, then int16 activations
    max_tries: int = DEFAULT_MAX_TRIES
    fidelity_images: int = DEFAULT_FIDELITY_IMAGES


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise UsageError(f"unknown precision {name!r}, expected one of {', '.join(MODES)}")
    return MODES[name]


def resolve_options(mode: str, io: str | None = None, representative_count: int | None = None,
                    check_subset: str | None = None, max_drop: float = DEFAULT_THRESHOLDS.max_drop,
                    max_class_drop: float = DEFAULT_THRESHOLDS.max_class_drop,
                    min_agreement: float = DEFAULT_THRESHOLDS.min_agreement, debug: bool = False,
                    float_layers: int = 0, edgetpu: bool = False, seed: int = 0, ood: bool | None = None,
                    ood_flag_rate: float | None = None,
                    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
                    confidence: float = DEFAULT_THRESHOLDS.confidence, accuracy_control: bool = True,
                    max_tries: int = DEFAULT_MAX_TRIES, fidelity_images: int = DEFAULT_FIDELITY_IMAGES) -> ConvertOptions:
    """Check a request against its mode; None means "not given" so a default is never mistaken for a choice."""
    chosen = get_mode(mode)
    refuse_tflite_options(chosen, {"--io": io is not None, "--debug": debug, "--float-layers": float_layers != 0,
                                   "--edgetpu": edgetpu, "--ood": bool(ood), "--ood-flag-rate": ood_flag_rate is not None,
                                   "--no-accuracy-control": not accuracy_control,
                                   "--max-tries": max_tries != DEFAULT_MAX_TRIES})
    refuse_calibration_options(chosen, representative_count, debug, float_layers, edgetpu)
    io = resolve_io(chosen, io, float_layers, edgetpu)
    if chosen.needs_representative and representative_count is not None:  # None: the default, capped later
        if representative_count < 1:
            raise UsageError(f"got --representative-count {representative_count}, expected at least 1 image")
    if float_layers < 0:
        raise UsageError(f"got --float-layers {float_layers}, expected 0 or more layers")
    if check_subset is not None and check_subset not in CHECK_SUBSETS:
        raise UsageError(f"got --check-subset {check_subset}, expected one of {', '.join(CHECK_SUBSETS)} "
                         "(never train: the calibration images come from there)")
    thresholds = validate_thresholds(max_drop, max_class_drop, min_agreement, confidence)
    if not 1 <= max_tries <= DEFAULT_MAX_TRIES:
        raise UsageError(f"got --max-tries {max_tries}, expected 1 to {DEFAULT_MAX_TRIES}")
    if fidelity_images < 0:
        raise UsageError(f"got --fidelity-images {fidelity_images}, expected 0 or more images")
    if ood_flag_rate is not None:
        if ood is False:
            raise UsageError("got --ood-flag-rate with --no-ood, expected one of them")
        if not math.isfinite(ood_flag_rate) or not 0.0 < ood_flag_rate < 0.5:
            raise UsageError(f"got --ood-flag-rate {ood_flag_rate}, expected a fraction between 0 and 0.5")
    return ConvertOptions(chosen, io, representative_count, check_subset, thresholds, debug or float_layers > 0,
                          float_layers, edgetpu, seed, ood, ood_flag_rate, check_target(target_sensitivity),
                          accuracy_control, max_tries, fidelity_images)


def refuse_tflite_options(mode: Mode, given: dict[str, bool]) -> None:
    """Options of the TFLite converter or its check, refused up front with a mode that uses another converter."""
    named = [name for name in TFLITE_ONLY if given.get(name)]
    if named and not mode.tflite:
        raise UsageError(f"got {', '.join(named)} with --{mode.name}, expected none of {', '.join(TFLITE_ONLY)} "
                         f"(TFLite options; --{mode.name} quantizes with MCT and converts with Sony's converter)")


def refuse_calibration_options(mode: Mode, representative_count, debug: bool, float_layers: int,
                               edgetpu: bool) -> None:
    """Options that only make sense with calibrated int8 activations."""
    given = {"--representative-count": representative_count is not None, "--debug": debug,
             "--float-layers": float_layers != 0, "--edgetpu": edgetpu}
    named = [name for name, is_given in given.items() if is_given]
    if named and not mode.needs_representative:
        raise UsageError(f"got {', '.join(named)} with --{mode.name}, expected it only with --int8 "
                         "(it needs calibrated int8 activations)")


def resolve_io(mode: Mode, io: str | None, float_layers: int, edgetpu: bool) -> str:
    """The input/output type: as given when the mode allows it; float with --float-layers; else the mode's default."""
    if io is not None and io not in mode.io_choices:
        hint = "" if mode.fully_integer else " (only --int8 has integer IO)"
        raise UsageError(f"got --io {io} with --{mode.name}, expected {' or '.join(mode.io_choices)}{hint}")
    if edgetpu and float_layers:
        raise UsageError(f"got --edgetpu with --float-layers {float_layers}, expected one of them: "
                         "float layers cannot run on the Edge TPU")
    if float_layers > 0 and io not in (None, "float"):
        raise UsageError(f"got --io {io} with --float-layers {float_layers}, expected --io float or no --io "
                         "(a model with float layers keeps float32 input and output)")
    io = io or ("float" if float_layers > 0 else mode.default_io)
    if edgetpu and io == "float":
        raise UsageError("got --edgetpu with --io float, expected --io uint8 or int8 (the Edge TPU needs integer IO)")
    return io


def validate_thresholds(max_drop: float, max_class_drop: float, min_agreement: float,
                        confidence: float = DEFAULT_THRESHOLDS.confidence) -> Thresholds:
    for name, value, high, unit in (("--max-drop", max_drop, 100.0, "percentage points"),
                                    ("--max-class-drop", max_class_drop, 100.0, "percentage points"),
                                    ("--min-agreement", min_agreement, 1.0, "a fraction")):
        if not math.isfinite(value) or not 0.0 <= value <= high:
            raise UsageError(f"got {name} {value}, expected {unit} between 0 and {high:g}")
    if not math.isfinite(confidence) or not 0.5 <= confidence < 1.0:
        raise UsageError(f"got --confidence {confidence}, expected a fraction from 0.5 to below 1")
    return Thresholds(float(max_drop), float(max_class_drop), float(min_agreement), float(confidence))
