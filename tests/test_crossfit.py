"""Cross-fitted probabilities: every image is predicted by a head that never saw its group."""

import numpy as np

from allx.train import crossfit


def test_every_image_is_predicted_by_a_fit_without_its_group(monkeypatch):
    rng = np.random.default_rng(0)
    n_images, views = 60, 3
    groups = [f"g{i // 4}" for i in range(n_images)]  # 15 groups of 4 images
    labels = np.array([(i // 4) % 3 for i in range(n_images)])
    # feature row r holds r itself in its first column, so a fit's rows can be read back
    features = np.concatenate([np.arange(n_images * views)[:, None], rng.normal(size=(n_images * views, 3))], axis=1)
    image_rows = [i * views for i in range(n_images)]
    view_rows = [range(i * views, (i + 1) * views) for i in range(n_images)]
    fits = []
    original = crossfit.fit_one

    def spy(x, y, c, weights):
        fits.append({int(v) for v in x[:, 0]})
        return original(x, y, c, weights)

    predicted = []
    original_predict = crossfit.predict

    def spy_predict(model, x, n):
        predicted.append({int(v) for v in x[:, 0]})
        return original_predict(model, x, n)

    monkeypatch.setattr(crossfit, "fit_one", spy)
    monkeypatch.setattr(crossfit, "predict", spy_predict)
    out = crossfit.crossfitted_probabilities(features, image_rows, view_rows, labels, groups, 1.0, 3, folds=5)
    assert len(fits) == 5 and out.shape == (n_images, 3) and np.allclose(out.sum(1), 1)
    seen = set()
    for trained, held in zip(fits, predicted):
        held_images = {r // views for r in held}
        held_groups = {groups[i] for i in held_images}
        trained_groups = {groups[r // views] for r in trained}
        assert not held_groups & trained_groups, "no group is both fitted on and predicted"
        assert trained == {r for i in range(n_images) if groups[i] in trained_groups for r in view_rows[i]}, \
            "a fit uses every view of its images"
        seen |= held_images
    assert seen == set(range(n_images)), "every image predicted once"


def test_proxy_groups_are_file_number_blocks_or_single_images():
    paths = [f"Benign/cell-{n}.jpg" for n in range(1, 7)] + [f"Pro/cell-{n}.jpg" for n in range(1, 4)]
    groups, how = crossfit.proxy_groups(paths, 3)
    assert groups[:6] == ["Benign#0"] * 3 + ["Benign#1"] * 3 and groups[6:] == ["Pro#0"] * 3
    assert how == "blocks of 3 file numbers"
    groups, how = crossfit.proxy_groups(["Benign/a.jpg", "Pro/b.jpg"], 3)
    assert groups == ["Benign/a.jpg", "Pro/b.jpg"] and how == "single images"
