"""Progress written as lines when the output is a log file, not a terminal."""

import re
import subprocess
import sys

from noisefind.base.console import LogProgress, clock, console


def test_a_step_is_logged_at_its_start_every_tenth_and_its_end():
    with console.capture() as captured, LogProgress() as bar:
        task = bar.add_task("flip search", total=50, info="")
        for _ in range(50):
            bar.advance(task)
        bar.add_task("open-ended", total=None)
    lines = captured.get().splitlines()
    search = [line for line in lines if line.startswith("flip search")]
    assert search[0] == "flip search: started, 50 to do"
    assert len(search) == 1 + 10 and search[-1].startswith("flip search: 100% (50/50)")
    assert all("eta" in line for line in search[1:-1]) and "eta" not in search[-1]
    assert lines[-1].startswith("open-ended: 0 done")  # ended without a total: said once


def test_clock_reads_hours_minutes_seconds():
    assert clock(3723.4) == "1:02:03" and clock(0) == "0:00:00"


def scan_log(tmp_path, *options: str) -> str:
    log = tmp_path / "scan.log"
    with open(log, "w") as stderr:
        subprocess.run([sys.executable, "-m", "noisefind", "scan", "digits", "--limit", "60",
                        "--epochs", "2", "--width", "0.25", "--folds", "2",
                        "--out", str(tmp_path / "out"), *options], stderr=stderr,
                       stdout=stderr, check=True)
    return log.read_text()


def test_a_scan_writing_to_a_file_shows_each_stage_and_its_progress(tmp_path):
    text = scan_log(tmp_path)
    stages = re.findall(r"^\[(\d)/(\d)\] (.+)$", text, re.M)
    assert [name for _, _, name in stages] == [
        "out-of-sample models", "default order", "writing"]
    assert {total for _, total, _ in stages} == {"3"}
    # training counts its batches: a tenth of them per line, the epoch's figures beside
    trained = re.findall(r"^training: (\d+)% \((\d+)/(\d+)\), elapsed \d+:\d\d:\d\d, eta",
                         text, re.M)
    assert len(trained) >= 9 and trained[0][2] == "18"  # 2 epochs of 9 batches, 898 rows
    assert re.search(r"^training: 100% \(18/18\), .*epoch 2 loss", text, re.M)
    assert "flip search" not in text  # the default scan runs none
    assert re.search(r"^plan: out-of-sample models -> .+; 1,797 examples \(.+ MB in memory as "
                     r"float32\), 60 ranked, 2 models to train$", text, re.M)
    assert re.search(r"^fold model 1 of 2 trained in \d+ s; the other 1 take about \d+ s$",
                     text, re.M)


def test_a_scan_of_one_model_says_what_its_trainings_will_take(tmp_path):
    text = scan_log(tmp_path, "--rank-by", "cutoff", "--max-units", "10")
    stages = [name for _, _, name in re.findall(r"^\[(\d)/(\d)\] (.+)$", text, re.M)]
    assert stages == ["training", "flip search", "out-of-sample models", "cutoff (replica)",
                      "writing"]
    assert re.search(r"^flip search: 100% \(60/60\)", text, re.M)
    assert re.search(r"^trained in \d+ s; the fold models and replica to come take about \d+ s$",
                     text, re.M)
