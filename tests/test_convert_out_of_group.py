"""convert.out_of_group: every shipped threshold set on images scored without their group."""

from dataclasses import replace

import numpy as np
import pytest

from allx.convert.ood import flagged_by_class, out_of_group_scores
from allx.convert.ood_stats import fit_mahalanobis, threshold_for
from allx.convert.out_of_group import TrainVal, groups_for, make_folds, out_of_fold
from allx.edge_runner.ood import mahalanobis_scores
from allx.errors import DataError

CLASSES, DIMENSIONS = 4, 16


def shifted_groups(rng, groups_per_class: int, images: int, centres: np.ndarray, spread=(0.5,) * CLASSES):
    """Embeddings where each group (patient) sits at its own random shift from its class centre; `spread`:
    per class, the scale of the shifts and of the images around them."""
    rows, labels, groups = [], [], []
    for label in range(CLASSES):
        for g in range(groups_per_class):
            shift = rng.normal(0, spread[label], DIMENSIONS)
            rows.append(centres[label] + shift + rng.normal(0, spread[label], (images, DIMENSIONS)))
            labels += [label] * images
            groups += [f"{label}#{g}"] * images
    return np.concatenate(rows), np.array(labels), groups


def test_groups_are_patients_else_file_blocks_else_single_images():
    paths = [f"Benign/b-{i:03d}.jpg" for i in range(20)] + [f"Pre/p-{i:03d}.jpg" for i in range(20)]
    patients = {p: f"patient{i // 7}" for i, p in enumerate(paths)}
    assert groups_for(paths, patients) == ([patients[p] for p in paths], "groups")
    blocks, code = groups_for(paths, None)
    assert code == "sequence" and len(set(blocks)) == 10  # 20 images per class: blocks of 4, one per fold and more
    assert blocks[0] == blocks[3] != blocks[4]
    named = ["Benign/alpha.jpg", "Benign/beta.jpg", "Pre/gamma.jpg"]
    assert groups_for(named, None) == (named, "image")


def test_folds_hold_out_whole_groups_and_every_image_once():
    paths = [f"{c}/x-{i:03d}.jpg" for c in "ABCD" for i in range(30)]
    labels = np.repeat(np.arange(4), 30)
    groups, code = groups_for(paths, None)
    folds = make_folds(paths, labels, groups, code)
    assert folds.folds == 5 and sorted(np.concatenate(folds.held).tolist()) == list(range(120))
    for held in folds.held:
        inside = {groups[i] for i in held}
        assert not inside & {groups[i] for i in np.setdiff1d(np.arange(120), held)}
    assert folds.evidence().to_dict()["on"] == "out-of-group"
    with pytest.raises(DataError, match="expected at least 2"):
        make_folds(paths[:3], labels[:3], ["one"] * 3, code)


def test_out_of_fold_never_scores_an_image_with_its_own_group():
    paths = [f"A/x-{i:03d}.jpg" for i in range(50)]
    groups, code = groups_for(paths, None)
    folds = make_folds(paths, np.zeros(50, int), groups, code)
    seen = out_of_fold(folds, lambda fit, held: np.array([[set(groups[i] for i in fit).isdisjoint({groups[h]})]
                                                           for h in held]))
    assert seen.all()


def test_out_of_group_threshold_flags_the_asked_share_of_new_patients_where_a_leaky_val_does_not():
    """Generated data with a shift per group; the validation images share groups with training (a random
    split). The val threshold is too tight for new patients; the cross-fitted one lands within 2 pp."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3.0, (CLASSES, DIMENSIONS))
    seen, labels, groups = shifted_groups(rng, 25, 10, centres)  # train+val: 100 groups of 10 images
    new, _, _ = shifted_groups(rng, 250, 4, centres)  # 1,000 new patients' images
    rate = 0.05
    # leaky: a random 10% of the images as val, the rest train (val shares every patient with train)
    val = rng.random(len(seen)) < 0.1
    leaky_stats = fit_mahalanobis(seen[~val], labels[~val], 128)
    leaky = threshold_for(mahalanobis_scores(seen[val], leaky_stats), rate)
    leaky_rate = float(np.mean(mahalanobis_scores(new, leaky_stats) > leaky))
    # cross-fitted over group folds of the same train+val images
    paths = [f"c{label}/img-{i:05d}.jpg" for i, label in enumerate(labels)]
    folds = make_folds(paths, labels, groups, "groups")
    scores, stats = out_of_group_scores(TrainVal(folds, seen, ()), 128)
    threshold = threshold_for(scores, rate)
    new_rate = float(np.mean(mahalanobis_scores(new, stats) > threshold))
    assert abs(new_rate - rate) <= 0.02, new_rate
    assert leaky_rate > rate + 0.04, leaky_rate  # the problem this solves, on the same data


def test_a_threshold_per_class_flags_the_asked_share_of_every_class_out_of_group_and_on_new_patients():
    """One class spreads wider than the others (as Benign does on the real smears): a single threshold on the
    distance would flag that class several times more often; the class scales bring every class within 2 pp."""
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 4.0, (CLASSES, DIMENSIONS))
    spread = (0.7, 0.5, 0.5, 0.5)
    seen, labels, groups = shifted_groups(rng, 25, 10, centres, spread)
    new, new_labels, _ = shifted_groups(rng, 250, 4, centres, spread)
    rate = 0.05
    paths = [f"c{label}/img-{i:05d}.jpg" for i, label in enumerate(labels)]
    folds = make_folds(paths, labels, groups, "groups")
    scores, stats = out_of_group_scores(TrainVal(folds, seen, ()), 128, rate)
    threshold = threshold_for(scores, rate)
    by_class = flagged_by_class(scores > threshold, folds, [f"c{k}" for k in range(CLASSES)])
    assert [record["n"] for record in by_class.values()] == [250] * CLASSES
    for record in by_class.values():
        assert abs(record["rate"] - rate) <= 0.02, by_class
        low, high = record["evidence"]["interval"]
        assert low <= record["rate"] <= high
    flagged = mahalanobis_scores(new, stats) > threshold
    assert abs(flagged.mean() - rate) <= 0.02
    for label in range(CLASSES):  # 3 pp: each class's 95% point is read off 250 images (about 1.4 pp of noise)
        assert abs(flagged[new_labels == label].mean() - rate) <= 0.03, (label, flagged[new_labels == label].mean())
    unscaled = mahalanobis_scores(new, replace(stats, class_scales=None))
    single = unscaled > threshold_for(out_of_group_distances(folds, seen, stats), rate)
    assert single[new_labels == 0].mean() > 3 * rate  # what one threshold for all classes would do


def out_of_group_distances(folds, embeddings, stats):
    """The unscaled out-of-fold distances, for the single-threshold comparison."""
    k = stats.projection.shape[1]
    return out_of_fold(folds, lambda fit, held: mahalanobis_scores(
        embeddings[held], fit_mahalanobis(embeddings[fit], folds.labels[fit], k)))
