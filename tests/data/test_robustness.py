"""Nothing lost, nothing trusted blindly: bad input through the real CLI, untrusted files."""

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from noisefind.cli import app

runner = CliRunner()
PACKAGE = Path(__file__).resolve().parents[2] / "noisefind"


def _one_line_error(result, message: str) -> None:
    """Exit 2, no traceback, and the last line is the one error line naming the problem."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, result.output
    assert result.output.count("error: ") == 1


def _fake_run(noisy_digits_run, folder: Path, weights: bytes | None = None,
              config: dict | None = None) -> Path:
    folder.mkdir()
    source = noisy_digits_run.path
    (folder / "config.json").write_text(
        json.dumps(config) if config is not None else (source / "config.json").read_text())
    (folder / "model.safetensors").write_bytes(
        weights if weights is not None else (source / "model.safetensors").read_bytes())
    return folder


@pytest.mark.parametrize("args,message", [
    (["scan", "missing/folder"], "data not found"),
    (["scan", "digits", "--noise", "symmetric:1"], "rate must be in [0, 1)"),
    (["scan", "digits", "--noise", "uniform:0.1"], "unknown kind"),
    (["scan", "digits", "--limit", "0", "--epochs", "1"], "--limit"),
])
def test_bad_arguments(args, message):
    _one_line_error(runner.invoke(app, args), message)


def test_empty_and_single_class_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(runner.invoke(app, ["scan", str(tmp_path / "empty")]), "no class sub-folders")
    (tmp_path / "one" / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "cat" / "a.png")
    _one_line_error(runner.invoke(app, ["scan", str(tmp_path / "one")]), "one class")


def test_manifest_with_unknown_paths_or_missing_columns(tmp_path):
    (tmp_path / "a.csv").write_text("path,label\nghost.png,cat\nghost2.png,dog\n")
    _one_line_error(runner.invoke(app, ["scan", str(tmp_path / "a.csv")]), "do not exist")
    (tmp_path / "b.csv").write_text("path,klass\nx.png,cat\n")
    _one_line_error(runner.invoke(app, ["scan", str(tmp_path / "b.csv")]), "'label'")


def test_model_that_is_not_a_run(tmp_path):
    _one_line_error(runner.invoke(app, ["scan", "digits", "--model", str(tmp_path)]),
                    "not a noisefind run")


def test_pickle_payload_is_refused(noisy_digits_run, tmp_path):
    class Exploit:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    folder = _fake_run(noisy_digits_run, tmp_path / "run", weights=pickle.dumps(Exploit()))
    _one_line_error(runner.invoke(app, ["scan", "digits", "--model", str(folder)]),
                    "not a valid safetensors file")
    assert not (tmp_path / "pwned").exists()

    torch.save({"weights": torch.zeros(3)}, tmp_path / "torch.pt")  # a torch pickle file
    folder = _fake_run(noisy_digits_run, tmp_path / "run2",
                       weights=(tmp_path / "torch.pt").read_bytes())
    _one_line_error(runner.invoke(app, ["scan", "digits", "--model", str(folder)]),
                    "not a valid safetensors file")


def test_run_whose_classes_or_shape_do_not_match_the_data(noisy_digits_run, tmp_path):
    from conftest import write_image_folder

    _one_line_error(runner.invoke(app, ["scan", "wine", "--model", str(noisy_digits_run.path)]),
                    "classes")
    # Digit classes but colour 12x12 images: the classes fit, the input shape does not.
    folder = write_image_folder(tmp_path / "colour", per_class=1,
                                classes=[str(k) for k in range(10)])
    _one_line_error(runner.invoke(app, ["scan", str(folder), "--model",
                                        str(noisy_digits_run.path)]), "expects inputs of shape")


def test_weights_that_do_not_fit_the_architecture(noisy_digits_run, tmp_path):
    config = json.loads((noisy_digits_run.path / "config.json").read_text())
    config["train"]["width"] = 1.0  # the saved weights are width 0.5
    folder = _fake_run(noisy_digits_run, tmp_path / "run", config=config)
    _one_line_error(runner.invoke(app, ["scan", "digits", "--model", str(folder)]),
                    "do not match the architecture")


def test_output_folder_that_is_a_file(noisy_digits_run, tmp_path):
    (tmp_path / "taken").write_text("")
    result = runner.invoke(app, ["scan", "digits", "--model", str(noisy_digits_run.path),
                                 "--out", str(tmp_path / "taken")])
    _one_line_error(result, "is a file")


def test_unreadable_images_are_listed_in_the_summary(image_folder, tmp_path):
    (image_folder / "cat" / "truncated.png").write_bytes(
        (image_folder / "cat" / "000.png").read_bytes()[:60])
    (image_folder / "dog" / "zero.png").write_bytes(b"")
    Image.new("P", (30, 30)).save(image_folder / "dog" / "palette.png")
    Image.new("RGBA", (7, 7)).save(image_folder / "fox" / "alpha.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["scan", str(image_folder), "--epochs", "2", "--width", "0.25",
                                 "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "skipped 2 unreadable files" in result.output
    summary = json.loads((out / "summary.json").read_text())
    skipped = sorted(Path(s["path"]).name for s in summary["skipped_files"])
    assert skipped == ["truncated.png", "zero.png"]
    assert summary["scanned"] == 20  # 18 + the palette and RGBA images, converted


def test_no_pickle_anywhere_in_the_package():
    for file in PACKAGE.rglob("*.py"):
        text = file.read_text()
        assert "import pickle" not in text, file
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (file, call)
        assert "allow_pickle=True" not in text, file
