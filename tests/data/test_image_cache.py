"""The decoded-image cache: a rerun reads the images from disk, and the scan is the same."""

from pathlib import Path

import pandas as pd
import torch
from typer.testing import CliRunner

from noisefind.cli import app
from noisefind.data import image_cache
from noisefind.data.load import load_data

runner = CliRunner()


def test_a_second_load_reads_the_cache_memory_mapped(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("NOISEFIND_CACHE", str(tmp_path / "cache"))
    first = load_data(image_folder)
    entries = sorted(p.name for p in (tmp_path / "cache" / "images").iterdir())
    assert len(entries) == 2 and entries[0].endswith(".json") and entries[1].endswith(".npy")
    second = load_data(image_folder)
    assert not first.preparation["from_cache"] and second.preparation["from_cache"]
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
    entry = next((tmp_path / "cache" / "images").glob("*.npy"))
    assert str(entry) in Path("/proc/self/maps").read_text()  # mapped from disk, not copied
    # A file that changes is a new entry: the cache never serves stale images.
    (image_folder / "cat" / "000.png").write_bytes((image_folder / "dog" / "001.png").read_bytes())
    third = load_data(image_folder)
    assert not third.preparation["from_cache"] and not torch.equal(third.x, first.x)


def test_a_damaged_entry_is_decoded_again(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("NOISEFIND_CACHE", str(tmp_path / "cache"))
    first = load_data(image_folder)
    for entry in (tmp_path / "cache" / "images").glob("*.npy"):
        entry.write_bytes(b"not an array")
    again = load_data(image_folder)
    assert not again.preparation["from_cache"] and torch.equal(again.x, first.x)


def test_none_turns_the_cache_off(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("NOISEFIND_CACHE", "none")
    assert image_cache.cache_folder() is None
    assert not load_data(image_folder).preparation["from_cache"]


def test_a_scan_from_the_cache_gives_the_table_of_a_scan_in_memory(image_folder, tmp_path,
                                                                   monkeypatch):
    args = ["scan", str(image_folder), "--epochs", "3", "--width", "0.25", "--folds", "2",
            "--max-units", "10", "--quiet"]
    monkeypatch.setenv("NOISEFIND_CACHE", "none")
    assert runner.invoke(app, args + ["--out", str(tmp_path / "memory")]).exit_code == 0
    monkeypatch.setenv("NOISEFIND_CACHE", str(tmp_path / "cache"))
    assert runner.invoke(app, args + ["--out", str(tmp_path / "fill")]).exit_code == 0
    assert runner.invoke(app, args + ["--out", str(tmp_path / "cached")]).exit_code == 0
    memory = pd.read_csv(tmp_path / "memory" / "suspects.csv")
    cached = pd.read_csv(tmp_path / "cached" / "suspects.csv")
    pd.testing.assert_frame_equal(memory, cached)


def test_unreadable_files_stay_listed_and_out_when_read_from_the_cache(image_folder, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("NOISEFIND_CACHE", str(tmp_path / "cache"))
    (image_folder / "dog" / "empty.png").write_bytes(b"")
    first, second = load_data(image_folder), load_data(image_folder)
    assert second.preparation["from_cache"]
    assert len(second) == len(first) == 18 and torch.equal(first.x, second.x)
    assert [s["path"] for s in second.skipped] == [str(image_folder / "dog" / "empty.png")]
    assert "empty.png" not in "".join(second.paths)
