"""`allx-edge calibrate`: re-threshold a model folder on a site's own images and, with labels, measure it there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from allx.console import echo, handle_errors
from allx.edge_runner.calibrate import DEFAULT_MAX_DROP, calibrate_site, drifted
from allx.errors import CheckFailed


@handle_errors
def calibrate(
    model: Annotated[Path, typer.Option(
        "--model", "-m", help="The model folder `allx convert` wrote (never changed).")],
    images: Annotated[Path, typer.Option("--images", help="Folder of the site's own camera images (sub-folders too).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="The new model folder to write (must not exist, or be empty).")],
    labels_csv: Annotated[Optional[Path], typer.Option(
        "--labels-csv", help="CSV with columns path (or file) and label: also report the site's accuracy, "
        "sensitivity and specificity beside the converter's.", show_default=False)] = None,
    flag_rate: Annotated[Optional[float], typer.Option(
        "--flag-rate", help="Share of the site's images the out-of-distribution flag may mark (default: the one "
        "allx convert used, model.json ood.flag_rate).", show_default=False)] = None,
    max_drop: Annotated[float, typer.Option(
        "--max-drop", help="With --labels-csv: fail (exit 3, no folder written) when the site's accuracy, "
        "sensitivity or specificity is more than this below the converter's.")] = DEFAULT_MAX_DROP,
    force: Annotated[bool, typer.Option(
        "--force", help="Without --labels-csv, write the folder even when the shipped out-of-distribution "
        "threshold flagged most of the site's images.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the calibration record as JSON.")] = False,
):
    """Re-calibrate a model's thresholds on a site's images into a NEW model folder (no TensorFlow).

    The out-of-distribution threshold is set to flag the same share of the site's images as allx convert
    flagged of its held-out images, and the image-quality limits (focus, exposure, stain colour) are chosen
    from the site's images by the rule allx convert used on the training images: give good fields the
    site would accept. With --labels-csv the site's accuracy, malignant sensitivity and
    benign specificity are reported beside the converter's. Run it on day one and monthly.
    Exit codes: 0 ok; 2 usage, data or model error (one line each); 3 the site acceptance failed (with
    --labels-csv, a number more than --max-drop below the converter's; without it, the shipped threshold
    flagged most site images and no --force): no model folder is written.
    """
    calibration = calibrate_site(model, images, out, labels_csv=labels_csv, flag_rate=flag_rate, max_drop=max_drop,
                                 force=force)
    if json_out:
        typer.echo(json.dumps(calibration.to_dict(), indent=2))
    for line in calibration_lines(calibration):
        echo(line, err=json_out)
    if calibration.failures:
        raise CheckFailed(f"site acceptance failed: {'; '.join(calibration.failures)}; no model folder written "
                          f"(the model does not work as converted on these images)")


def calibration_lines(calibration) -> list[str]:
    target = "not written (acceptance failed)" if calibration.failures else calibration.out_dir
    lines = [f"site calibration: {calibration.images} images from {calibration.images_dir} -> {target}"
             + (f" ({len(calibration.unreadable)} unreadable, skipped)" if calibration.unreadable else "")]
    ood = calibration.ood
    if ood is not None:
        lines.append(f"out-of-distribution threshold: {ood['threshold_before']:.4g} -> {ood['threshold']:.4g} (flags "
                     f"{ood['flagged_after']:.1%} of the site's images; the converted threshold flagged "
                     f"{ood['flagged_before']:.1%})")
        if drifted(ood):
            lines.append("warning: the site's images differ from the training images (the converted threshold "
                         f"flagged {ood['flagged_before']:.0%}); check the site's accuracy with --labels-csv "
                         "before relying on the model here")
    quality = calibration.quality
    if quality is not None:
        before, after = quality["limits_before"], quality["limits"]
        lines.append(f"image-quality limits: focus >= {before['focus_min'] or 0:.0f} -> {after['focus_min']:.0f}, "
                     f"stain colour within {before['colour_max'] or 0:.1f} -> {after['colour_max']:.1f} of the site's "
                     f"mean (rejects {quality['rejected_after']:.1%} of the site's images; the converted limits "
                     f"rejected {quality['rejected_before']:.1%})")
    lines += [f"note: {note}" for note in calibration.notes]
    if calibration.accuracy is not None:
        lines += accuracy_lines(calibration.accuracy)
    return lines


def accuracy_lines(accuracy) -> list[str]:
    converter = accuracy.converter
    where = (f" on {converter['images']} {converter['subset']} images" if converter.get("images") else
             f" on {converter['subset']}" if converter.get("subset") else "")

    def pair(name: str, site, theirs) -> str:
        site_text = "n/a" if site is None else f"{site:.3f}"
        return f"{name} {site_text} (converter {'n/a' if theirs is None else f'{theirs:.3f}'})"

    lines = [f"site accuracy on {accuracy.images} labelled images (converter{where}; malignant from score "
             f"{accuracy.decision_threshold:.3g}):",
             "  " + "; ".join([pair("accuracy", accuracy.accuracy, converter["accuracy"]),
                               pair("malignant sensitivity", accuracy.malignant_sensitivity,
                                    converter["malignant_sensitivity"]),
                               pair("benign specificity", accuracy.benign_specificity,
                                    converter["benign_specificity"])]),
             "  per class: " + ", ".join(f"{label} {recall:.3f} (n={n})"
                                         for label, (n, recall) in accuracy.per_class.items())]
    if accuracy.unlabelled or accuracy.missing:
        lines.append(f"  {accuracy.unlabelled} site images without a label; {len(accuracy.missing)} labels naming no "
                     "readable image" + (f" (e.g. {accuracy.missing[0]})" if accuracy.missing else ""))
    return lines
