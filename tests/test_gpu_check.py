"""benchmarks/gpu_check.sh in its CPU smoke mode: every step at toy size, so it cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("NOISEFIND_DATASETS", ROOT.parent / "shared" / "datasets"))


@pytest.mark.skipif(not (DATASETS / "cifar10-jpg.tar.gz").exists()
                    or not (DATASETS / "cifar10n-labels.csv").exists(),
                    reason=f"the CIFAR-10 archive and CIFAR-10N labels are not in {DATASETS}")
def test_gpu_check_smoke_mode_runs_every_step(tmp_path):
    env = {**os.environ, "NOISEFIND_GPU_CHECK_SMOKE": "1", "OUT": str(tmp_path),
           "PYTHON": sys.executable, "NOISEFIND_DATASETS": str(DATASETS)}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    status = json.loads((tmp_path / "gpu_check.json").read_text())
    assert list(status) == ["folds", "scan", "search", "cifar10n"]
    assert all(step["exit"] == 0 for step in status.values()), status
    folds = json.loads((tmp_path / "fold_recipe-cifar10-gpu.json").read_text())
    assert 0.0 <= folds["results"]["fast"]["accuracy"] <= 1.0
    assert folds["results"]["fast"]["examples"] == 200
    assert folds["results"]["fast"]["epochs"] == 1  # --fold-epochs, not the recipe's own
    scan = json.loads((tmp_path / "gpu_check-scan-cifar10.json").read_text())
    assert "neighbours" in scan["seconds"] and "train" not in scan["seconds"]  # the fold
    # models' stages alone: the default scan
    speed = json.loads((tmp_path / "scan_speed_digits_gpu.json").read_text())
    assert speed["settings"]
    bench = json.loads((tmp_path / "cifar10n-random1-all-gpu" / "results.json").read_text())
    detectors = {record["detector"] for record in bench["runs"]}
    assert {"noisefind", "confident_learning"} <= detectors
    assert all("fold_accuracy" in record for record in bench["runs"]
               if record["detector"] == "noisefind")
