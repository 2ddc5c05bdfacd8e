"""torchrun with two CPU processes (Gloo): a sharded scan equals the single-process scan."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd

# torchrun gives each rank one thread; the single process gets the same, because CPU reductions
# over other thread counts round differently, and the cutoff's replica training amplifies that.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(*args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "noisefind", *args, "--quiet"]
    subprocess.run(command, check=True, capture_output=True, timeout=300, env=ONE_THREAD)


def test_sharded_scan_rows_equal_single_process_rows(noisy_digits_run, tmp_path):
    args = ["scan", "digits", "--model", str(noisy_digits_run.path), "--limit", "60",
            "--max-units", "30", "--folds", "0"]
    _torchrun(*args, "--out", str(tmp_path / "two"))
    subprocess.run([sys.executable, "-m", "noisefind", *args, "--out", str(tmp_path / "one"),
                    "--quiet"], check=True, capture_output=True, timeout=300, env=ONE_THREAD)
    two = pd.read_csv(tmp_path / "two" / "suspects.csv")
    one = pd.read_csv(tmp_path / "one" / "suspects.csv")
    pd.testing.assert_frame_equal(one, two)
    # Both ranks really worked: each wrote its own shard of the progress log.
    shards = sorted(p.name for p in (tmp_path / "two").glob("scan_progress*.jsonl"))
    assert shards == ["scan_progress.1.jsonl", "scan_progress.jsonl"]
    assert all((tmp_path / "two" / s).read_text().count("\n") == 30 for s in shards)


def test_data_parallel_training_records_every_example(tmp_path):
    _torchrun("train", "digits", "--noise", "symmetric:0.1", "--epochs", "4", "--width", "0.25",
              "--out", str(tmp_path / "run"))
    history = np.load(tmp_path / "run" / "history.npz")
    assert history["loss"].shape == (4, 1797)
    assert (history["loss"] > 0).all()  # each example's loss came from one of the two ranks


def test_a_backbone_is_probed_then_fine_tuned_data_parallel(digit_manifest, resnet_weights,
                                                           tmp_path):
    # 3 epochs: the first trains the new classifier alone (a third of them), on both ranks.
    _torchrun("scan", str(digit_manifest), "--backbone", "torchvision:resnet18", "--weights",
              str(resnet_weights), "--epochs", "3", "--folds", "0", "--cutoff", "none",
              "--limit", "20", "--max-units", "3", "--out", str(tmp_path / "out"))
    table = pd.read_csv(tmp_path / "out" / "suspects.csv")
    assert len(table) == 20 and table["units_to_flip"].notna().all()
