"""The decoded-image cache: a rerun reads the images from disk, and the scan is the same."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from noisefind.base.errors import NoisefindError
from noisefind.cli import app
from noisefind.data import image_cache
from noisefind.data.disk_images import DiskImages, parse_bytes, require_room
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
            "--quiet"]
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


def test_a_set_over_the_memory_budget_streams_from_disk_and_scans_to_the_same_table(
        image_folder, tmp_path, monkeypatch):
    args = ["scan", str(image_folder), "--epochs", "3", "--width", "0.25", "--folds", "2",
            "--quiet"]
    monkeypatch.setenv("NOISEFIND_CACHE", str(tmp_path / "cache"))
    assert runner.invoke(app, args + ["--out", str(tmp_path / "memory")]).exit_code == 0
    # Streamed both when decoding (written straight to the cache) and when read back.
    for name in ("decoded", "reread"):
        if name == "decoded":
            for entry in (tmp_path / "cache" / "images").iterdir():
                entry.unlink()
        result = runner.invoke(app, args + ["--out", str(tmp_path / name),
                                            "--memory-budget", "1KB"])
        assert result.exit_code == 0, result.output
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["input"]["streamed_from_disk"] is True
        assert summary["input"]["from_cache"] is (name == "reread")
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "memory" / "suspects.csv"),
                                      pd.read_csv(tmp_path / name / "suspects.csv"))


def test_streamed_images_are_read_by_rows_and_subsets_stay_on_disk(image_folder, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("NOISEFIND_CACHE", str(tmp_path / "cache"))
    (image_folder / "dog" / "empty.png").write_bytes(b"")  # a skipped file: rows stay aligned
    memory = load_data(image_folder)
    disk = load_data(image_folder, memory_budget=0)
    assert isinstance(disk.x, DiskImages) and disk.x.shape == memory.x.shape
    rows = torch.tensor([5, 0, 1, 2, 17, 3])
    assert torch.equal(disk.x[rows], memory.x[rows])
    assert torch.equal(disk.x[2:9], memory.x[2:9]) and torch.equal(disk.x[4], memory.x[4])
    part = disk.subset(rows)
    assert isinstance(part.x, DiskImages)
    assert torch.equal(part.x[1:4], memory.x[rows[1:4]])
    assert torch.equal(part.x.to("cpu")[:], memory.x[rows])


def test_streaming_without_a_cache_folder_is_a_clear_error(image_folder, monkeypatch):
    monkeypatch.setenv("NOISEFIND_CACHE", "none")
    result = runner.invoke(app, ["scan", str(image_folder), "--memory-budget", "1KB",
                                 "--epochs", "1"])
    assert result.exit_code == 2
    assert "memory budget" in result.output and "NOISEFIND_CACHE" in result.output


def test_memory_budget_sizes_are_read_in_binary_units_and_bad_ones_named():
    assert parse_bytes("500MB") == 500 * 2**20 and parse_bytes("2g") == 2 * 2**30
    assert parse_bytes("1024") == 1024 and parse_bytes("1.5 KB") == 1536
    with pytest.raises(NoisefindError, match="memory_budget"):
        parse_bytes("lots")


def test_images_that_do_not_fit_the_device_are_refused_in_one_line():
    require_room(2**20, 2**21, "the GPU")  # room enough: nothing said
    with pytest.raises(NoisefindError, match=r"2\.0 MB as uint8, more than the GPU's free "
                                             r"memory \(1\.0 MB\)") as error:
        require_room(2**21, 2**20, "the GPU")
    assert error.value.parameter == ("image_size", "device")
