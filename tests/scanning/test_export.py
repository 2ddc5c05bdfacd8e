"""Export: cleaned manifests that load_data reads back, from real scans through the CLI; and the
bench's retraining on the cleaned set."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from noisefind.cli import app
from noisefind.data.labeled import to_float
from noisefind.data.load import load_data
from noisefind.decide.suggest import RELABEL_CONFIDENCE
from noisefind.scanning.export import load_training_set

runner = CliRunner()
TINY = ["--width", "0.25", "--quiet"]


def scan(out, data: str, *args: str):
    search = ["--max-units", "20"] if "--rank-by" in args else []  # the flip search's cap
    result = runner.invoke(app, ["scan", data, "--out", str(out), *TINY, *search, *args])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def digits_out(tmp_path_factory):
    return scan(tmp_path_factory.mktemp("digits"), "digits", "--noise", "symmetric:0.1",
                "--limit", "150", "--epochs", "8")


def export(out, manifest, *modes):
    return runner.invoke(app, ["export", str(out), *modes, "--out", str(manifest)])


def suspects(out) -> pd.DataFrame:
    return pd.read_csv(out / "suspects.csv", dtype={"flipped_to": str, "given_label": str,
                                                    "suggested_label": str, "oos_label": str})


def test_drop_writes_pngs_and_a_manifest_without_the_flagged(digits_out, tmp_path):
    result = export(digits_out, tmp_path / "clean.csv", "--drop")
    assert result.exit_code == 0, result.output
    flagged = set(suspects(digits_out).query("suspected")["index"])
    assert flagged
    manifest = pd.read_csv(tmp_path / "clean.csv")
    assert list(manifest.columns) == ["path", "label"] and len(manifest) == 1797 - len(flagged)
    kept_index = {int(p.split("/")[-1].removesuffix(".png")) for p in manifest["path"]}
    assert not kept_index & flagged

    cleaned = load_data(tmp_path / "clean.csv")  # trains as image data again
    original = load_data("digits").with_noise("symmetric:0.1", seed=0)
    keep = np.setdiff1d(np.arange(1797), sorted(flagged))
    assert cleaned.is_image and cleaned.input_shape == (1, 8, 8)
    assert cleaned.classes == original.classes
    assert torch.equal(cleaned.y, original.y[keep])  # the given labels, noisy ones included
    assert cleaned.x.dtype == torch.uint8  # decoded files are kept as uint8
    assert torch.allclose(to_float(cleaned.x), original.x[keep], atol=1 / 255)


def test_relabel_applies_only_the_suggestions_the_out_of_sample_models_back(digits_out,
                                                                           tmp_path):
    result = export(digits_out, tmp_path / "relabelled.csv", "--relabel")
    assert result.exit_code == 0, result.output
    table = suspects(digits_out)
    flagged = table[table["suspected"]]
    manifest = pd.read_csv(tmp_path / "relabelled.csv", dtype={"label": str})
    by_index = dict(zip([int(p.split("/")[-1][:-4]) for p in manifest["path"]],
                        manifest["label"], strict=True))
    training = load_training_set(digits_out)
    assert len(manifest) == len(training.y)  # relabelling drops nothing
    sure = (flagged["suggested_label"] == flagged["oos_label"]) & (
        flagged["oos_label_probability"] >= RELABEL_CONFIDENCE)
    assert sure.any()
    for _, row in flagged.iterrows():
        expected = row["suggested_label"] if sure[row.name] else row["given_label"]
        assert by_index[row["index"]] == expected
    changed = int(sure.sum())
    assert f"{changed} relabelled, {len(flagged) - changed} flagged left as they are" in \
        " ".join(result.output.split()) or changed == len(flagged)
    # On the digits the backed suggestions are right far more often than the labels they
    # replace: fewer wrong labels after than before.
    truth = dict(zip(training.index, np.asarray(training.classes)[training.true_y], strict=True))
    before = sum(truth[i] != label for i, label in
                 zip(training.index, np.asarray(training.classes)[training.y], strict=True))
    after = sum(truth[i] != label for i, label in by_index.items())
    assert after < before


def test_decisions_keep_relabel_and_drop_exactly_the_rows_decided(digits_out, tmp_path):
    table = suspects(digits_out)
    first, second, third = table["index"].iloc[:3].tolist()
    other = next(str(k) for k in range(10) if str(k) != table["given_label"].iloc[1])
    decisions = tmp_path / "decisions.csv"
    pd.DataFrame({"index": [first, second, third], "decision": ["drop", "relabel", "keep"],
                  "label": ["", other, ""]}).to_csv(decisions, index=False)
    result = export(digits_out, tmp_path / "clean.csv", "--decisions", str(decisions))
    assert result.exit_code == 0, result.output
    assert "1 dropped, 1 relabelled" in result.output
    training = load_training_set(digits_out)
    manifest = pd.read_csv(tmp_path / "clean.csv", dtype={"label": str})
    assert len(manifest) == len(training.y) - 1  # the flag is not applied: only the decisions
    names = [Path(p).stem for p in manifest["path"]]
    labels = dict(zip(names, manifest["label"], strict=True))
    assert f"{first:06d}" not in labels and labels[f"{second:06d}"] == other
    assert labels[f"{third:06d}"] == table["given_label"].iloc[2]


@pytest.mark.parametrize("rows,message", [
    ("index,decision,label\n0,burn,\n", "line 2: decision 'burn' is not one of"),
    ("index,decision,label\n0,relabel,eleven\n", "label 'eleven' is not a class"),
    ("index,decision,label\n999999,drop,\n", "index 999999 is not in the scan"),
    ("index,decision,label\n{i},drop,\n{i},keep,\n", "is decided twice"),
    ("index,verdict\n0,drop\n", "needs the columns index,decision,label"),
])
def test_bad_decisions_exit_2_naming_the_file_and_leave_no_manifest(digits_out, tmp_path, rows,
                                                                    message):
    decisions = tmp_path / "decisions.csv"
    decisions.write_text(rows.format(i=int(suspects(digits_out)["index"].iloc[0])))
    result = export(digits_out, tmp_path / "clean.csv", "--decisions", str(decisions))
    assert result.exit_code == 2 and message in result.output and "--decisions" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "clean.csv").exists()


def test_tabular_export_keeps_the_features(tmp_path):
    out = scan(tmp_path / "wine", "wine", "--noise", "symmetric:0.1", "--epochs", "20")
    result = export(out, tmp_path / "wine.csv", "--drop")
    assert result.exit_code == 0, result.output
    flagged = suspects(out).query("suspected")["index"].to_numpy()
    keep = np.setdiff1d(np.arange(178), flagged)
    manifest = pd.read_csv(tmp_path / "wine.csv")
    assert list(manifest.columns) == [f"x{k}" for k in range(13)] + ["label"]
    cleaned = load_data(tmp_path / "wine.csv")
    original = load_data("wine").with_noise("symmetric:0.1", seed=0)
    np.testing.assert_allclose(cleaned.x.numpy(), original.x[keep].numpy(), rtol=1e-6)
    names = np.array(cleaned.classes)[cleaned.y.numpy()]
    assert (names == np.array(original.classes)[original.y.numpy()[keep]]).all()


def test_image_files_export_their_absolute_paths(image_folder, tmp_path):
    out = scan(tmp_path / "out", str(image_folder), "--epochs", "3")
    result = export(out, tmp_path / "files.csv", "--drop")
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(tmp_path / "files.csv")
    assert manifest["path"].str.startswith(str(image_folder)).all()
    assert len(load_data(tmp_path / "files.csv")) == len(manifest)


@pytest.mark.parametrize("modes,name,message", [
    (["--drop", "--relabel"], "x.csv", "exactly one of --drop, --relabel or --decisions"),
    ([], "x.csv", "exactly one of --drop, --relabel or --decisions"),
    (["--drop"], "x.txt", "ending in .csv"),
])
def test_bad_export_flags_exit_2(digits_out, tmp_path, modes, name, message):
    result = export(digits_out, tmp_path / name, *modes)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_export_without_a_scan_exits_2(tmp_path):
    (tmp_path / "suspects.csv").write_text("rank,index\n1,0\n")
    result = export(tmp_path, tmp_path / "x.csv", "--drop")
    assert result.exit_code == 2 and "training_set.npz" in result.output


def test_export_onto_an_existing_file_exits_2_and_keeps_it(digits_out, tmp_path):
    manifest = tmp_path / "clean.csv"
    manifest.write_text("keep me\n")
    result = export(digits_out, manifest, "--drop")
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "--overwrite" in result.output and "clean.csv" in result.output
    assert "error:" in result.output and "Traceback" not in result.output
    assert manifest.read_text() == "keep me\n"


def test_export_overwrite_replaces_the_file(digits_out, tmp_path):
    manifest = tmp_path / "clean.csv"
    manifest.write_text("old\n")
    result = export(digits_out, manifest, "--drop", "--overwrite")
    assert result.exit_code == 0, result.output
    flagged = set(suspects(digits_out).query("suspected")["index"])
    assert len(pd.read_csv(manifest)) == 1797 - len(flagged)


def test_the_library_export_names_overwrite(digits_out, tmp_path):
    from noisefind.base.errors import NoisefindError
    from noisefind.scanning.export import export as export_manifest

    manifest = tmp_path / "clean.csv"
    manifest.write_text("old\n")
    with pytest.raises(NoisefindError) as error:
        export_manifest(digits_out, manifest, "drop")
    assert error.value.parameter == "overwrite" and str(manifest) in str(error.value)
    assert manifest.read_text() == "old\n"
    assert export_manifest(digits_out, manifest, "drop", overwrite=True)["examples"] > 0


def test_bench_retrain_compares_noisy_cleaned_and_clean(tmp_path):
    from noisefind.bench.runner import bench
    from noisefind.signals.flip import FlipSettings
    from noisefind.training.config import TrainConfig

    result = runner.invoke(app, ["bench", "digits", "--noise", "symmetric:0.1", "--seeds", "1",
                                 "--detectors", "flip", "--limit", "60", "--width", "0.25",
                                 "--epochs", "6", "--max-units", "20", "--retrain", "--out",
                                 str(tmp_path / "bench"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "retraining" in result.output
    markdown = (tmp_path / "bench" / "results.md").read_text()
    assert "## Retraining" in markdown and "dropped by flip_cutoff" in markdown
    runs = bench(load_data("wine"), ["symmetric:0.1"], seeds=1, detectors=["flip"],
                 train_config=TrainConfig(width=0.25, epochs=20), retrain=True,
                 flip_settings=FlipSettings(max_units=20), progress=False)
    records = {r["training_set"]: r for r in runs.attrs["retrain"]}
    assert list(records) == ["noisy", "dropped by flip_cutoff", "clean labels"]
    assert records["noisy"]["test_examples"] == 36  # a fifth of wine, held out with clean labels
    assert records["dropped by flip_cutoff"]["dropped"] == runs.attrs["decisions"][0]["flagged"]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in records.values())
