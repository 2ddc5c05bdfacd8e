"""``rank_label_issues``: the default order from evidence the user brings."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

import noisefind
from noisefind.base.errors import NoisefindError


@pytest.fixture(scope="module")
def digits_evidence(noisy_digits):
    """Real out-of-sample probabilities (5-fold logistic regression) and features (the pixels)
    of the noisy digits."""
    x = noisy_digits.x.reshape(len(noisy_digits), -1).float().numpy()
    labels = noisy_digits.y.numpy()
    probabilities = cross_val_predict(LogisticRegression(max_iter=2000), x, labels, cv=5,
                                      method="predict_proba")
    return labels, probabilities, x, noisy_digits.true_y.numpy()


def test_the_evidence_ranks_the_wrong_labels_first_and_counts_them(digits_evidence):
    labels, probabilities, x, truth = digits_evidence
    result = noisefind.rank_label_issues(labels, pred_probs=probabilities, features=x,
                                         true_labels=truth)
    table, summary = result.table, result.summary
    wrong = int((labels != truth).sum())
    assert summary["witnesses"] == ["out_of_sample", "neighbours"]
    assert summary["auroc_consensus_score"] > 0.97
    assert summary["estimated_mislabeled"] == pytest.approx(wrong, rel=0.25)
    low, high = summary["estimated_mislabeled_interval"]
    assert low <= summary["estimated_mislabeled"] <= high
    assert summary["flagged"] == round(summary["estimated_mislabeled"])
    assert table["suspected"].head(summary["flagged"]).all()  # the flag is the top of the order
    assert (np.diff(table["consensus_score"]) <= 0).all()
    assert set(table["index"]) == set(range(len(labels)))
    # The suggestion is the out-of-sample models' likeliest other class: mostly the truth.
    flagged_wrong = table[table["suspected"] & table["is_noisy"]]
    assert (flagged_wrong["suggested_label"] == flagged_wrong["true_label"]).mean() > 0.8


def test_each_piece_of_evidence_alone_gives_its_own_witness(digits_evidence):
    labels, probabilities, x, truth = digits_evidence
    alone = noisefind.rank_label_issues(labels, pred_probs=probabilities, true_labels=truth)
    assert alone.summary["witnesses"] == ["out_of_sample"]
    assert "neighbours" not in alone.table
    features = noisefind.rank_label_issues(np.array(["d" + str(v) for v in labels]),
                                           features=[x, x[:, ::-1].copy()])
    assert features.summary["witnesses"] == ["neighbours"]
    assert features.summary["count_from"] == "features"
    assert features.table["given_label"].str.startswith("d").all()
    scores = features.table.sort_values("index")["consensus_score"].to_numpy()
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(labels != truth, scores) > 0.9


def test_the_count_can_be_scored_on_the_features_neighbours(digits_evidence):
    labels, probabilities, x, truth = digits_evidence
    on_probabilities = noisefind.rank_label_issues(labels, pred_probs=probabilities, features=x)
    on_features = noisefind.rank_label_issues(labels, pred_probs=probabilities, features=x,
                                              count_from="features")
    assert on_probabilities.summary["count_from"] == "pred_probs"
    assert on_features.summary["count_from"] == "features"
    # The same order, counted on another witness: the count (and so the flag) differs.
    pd.testing.assert_frame_equal(on_probabilities.table.drop(columns="suspected"),
                                  on_features.table.drop(columns="suspected"))
    assert (on_features.summary["estimated_mislabeled"]
            != on_probabilities.summary["estimated_mislabeled"])
    assert on_features.summary["estimated_mislabeled"] == pytest.approx(
        int((labels != truth).sum()), rel=0.25)


def test_label_names_count_in_the_order_of_classes(digits_evidence):
    labels, probabilities, x, truth = digits_evidence
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    by_codes = noisefind.rank_label_issues(labels, pred_probs=probabilities, features=x)
    by_names = noisefind.rank_label_issues(names[labels], pred_probs=probabilities, features=x,
                                           classes=list(names))
    np.testing.assert_array_equal(by_names.table["index"], by_codes.table["index"])
    assert (by_names.table["given_label"] == names[labels[by_names.table["index"]]]).all()
    assert "warnings" not in by_names.summary
    # Columns out of the labels' order (names sorted, the columns as numbered): said, not hidden.
    shuffled = noisefind.rank_label_issues(np.searchsorted(np.sort(names), names[labels]),
                                           pred_probs=probabilities)
    assert "are its columns in the labels' order?" in shuffled.summary["warnings"][0]


def test_a_scan_s_own_fold_evidence_reproduces_its_witness_columns(noisy_digits, tmp_path):
    from noisefind.signals.neighbours import embeddings
    from noisefind.signals.out_of_sample import OutOfSample
    from noisefind.training.config import TrainConfig

    data = noisefind.LabeledData.subset(noisy_digits, torch.arange(300))
    scanned = noisefind.scan(data, epochs=6, width=0.25, limit=80, folds=2, cutoff="none",
                             rank_by="consensus", device="cpu", out=tmp_path / "scan")
    assert scanned.summary["witnesses"] == ["out_of_sample", "in_sample", "neighbours"]
    # The scan leaves its fold models' probabilities beside the table, rows in data order.
    pred_probs = np.load(tmp_path / "scan" / "pred_probs.npy")
    assert pred_probs.shape == (300, 10) and pred_probs.dtype == np.float32
    rows = scanned.table["index"].to_numpy()
    np.testing.assert_allclose(pred_probs[rows, data.y.numpy()[rows]],
                               scanned.table["oos_confidence"].to_numpy(), rtol=1e-6)
    # The same fold models again (same recipe, same seeds): their features.
    assert scanned.run is None  # the default scan trains only the fold models
    folds = OutOfSample(data, TrainConfig.from_dict(scanned.summary["train"]), 2)
    np.testing.assert_allclose(folds.probabilities(), pred_probs, rtol=1e-5, atol=1e-6)
    features = [embeddings(run.model, data.x, data.index).numpy() for run, _ in folds.runs()]
    ranked = noisefind.rank_label_issues(data.y.numpy(), pred_probs=pred_probs,
                                         features=features)
    ours = ranked.table.set_index("index")
    theirs = scanned.table.set_index("index")
    at = data.index.numpy().tolist()
    rows = [at.index(i) for i in theirs.index]
    for column in ("oos_margin", "neighbours"):
        np.testing.assert_allclose(ours.loc[rows, column].to_numpy(),
                                   theirs[column].to_numpy(), rtol=1e-5, atol=1e-6)


def test_the_files_are_written_and_a_used_folder_is_refused(digits_evidence, tmp_path):
    labels, probabilities, x, truth = digits_evidence
    out = tmp_path / "ranked"
    noisefind.rank_label_issues(labels, pred_probs=probabilities, out=out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count_method"] == "canaries"
    assert (out / "report.html").read_text().count('class="suspect') >= summary["flagged"]
    before = (out / "suspects.csv").read_bytes()
    with pytest.raises(NoisefindError) as error:
        noisefind.rank_label_issues(labels, pred_probs=probabilities, out=out)
    assert error.value.parameter == ("out", "overwrite")
    assert (out / "suspects.csv").read_bytes() == before
    noisefind.rank_label_issues(labels, features=x, out=out, overwrite=True)
    assert json.loads((out / "summary.json").read_text())["witnesses"] == ["neighbours"]


@pytest.mark.parametrize("change,parameter", [
    (lambda e: {"labels": e["labels"]}, ("pred_probs", "features")),
    (lambda e: {**e, "pred_probs": e["pred_probs"][:-1]}, "pred_probs"),
    (lambda e: {**e, "pred_probs": e["pred_probs"] * 2}, "pred_probs"),
    (lambda e: {**e, "pred_probs": np.log(e["pred_probs"] + 1e-9)}, "pred_probs"),
    (lambda e: {**e, "labels": e["labels"].astype(str)}, ("labels", "classes")),
    (lambda e: {**e, "labels": e["labels"] + 10}, "labels"),
    (lambda e: {**e, "features": e["features"][:, :, None]}, "features"),
    (lambda e: {**e, "features": np.full_like(e["features"], np.nan)}, "features"),
    (lambda e: {**e, "classes": ["a", "b"]}, ("pred_probs", "classes")),
    (lambda e: {**e, "k": 0}, "k"),
    (lambda e: {**e, "count_from": "neighbours"}, "count_from"),
    (lambda e: {**e, "labels": e["labels"].astype(str), "classes": list("012345678")},
     ("labels", "classes")),
    (lambda e: {"labels": e["labels"], "features": e["features"], "count_from": "pred_probs"},
     ("count_from", "pred_probs")),
])
def test_bad_evidence_names_its_parameter(digits_evidence, change, parameter):
    labels, probabilities, x, _ = digits_evidence
    given = change({"labels": labels, "pred_probs": probabilities, "features": x})
    with pytest.raises(NoisefindError) as error:
        noisefind.rank_label_issues(given.pop("labels"), **given)
    assert error.value.parameter == parameter
