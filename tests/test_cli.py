"""End-to-end: the real CLI on real (small) data, through typer's CliRunner."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from noisefind.cli import app

runner = CliRunner()


def test_train_writes_a_run_folder(tmp_path):
    result = runner.invoke(app, ["train", "digits", "--noise", "symmetric:0.1", "--epochs", "3",
                                 "--width", "0.25", "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["arch"] == "cnn" and config["train"]["epochs"] == 3


@pytest.mark.parametrize("args,message", [
    (["train", "no/such/folder"], "data not found"),
    (["train", "nodata"], "built-in data sets are"),
    (["train", "digits", "--noise", "symmetric:1.5"], "rate must be in [0, 1)"),
    (["train", "digits", "--arch", "vgg"], "--arch"),
])
def test_bad_input_exits_2_with_one_line(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_out_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    result = runner.invoke(app, ["train", "digits", "--epochs", "1", "--out", str(tmp_path / "f"),
                                 "--quiet"])
    assert result.exit_code == 2 and "is a file" in result.output


@pytest.mark.parametrize("command", [
    ["train", "--help"], ["scan", "--help"], ["bench", "--help"], ["evaluate", "--help"],
    ["memorization", "--help"], ["review", "--help"], ["export", "--help"],
    ["localize", "gradients", "--help"], ["localize", "rewind", "--help"],
    ["localize", "retrain", "--help"],
])
def test_every_command_accepts_quiet(command):
    result = runner.invoke(app, command, env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--quiet" in result.output


@pytest.mark.parametrize("option", [["--epochs", "5"], ["--width", "0.5"], ["--arch", "mlp"],
                                    ["--lr", "0.05"], ["--batch-size", "64"]])
def test_training_options_with_a_trained_model_are_an_error(option, tmp_path):
    result = runner.invoke(app, ["scan", "digits", "--model", str(tmp_path), *option])
    assert result.exit_code == 2
    assert option[0] in result.output and "--model" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_dropout_options_without_dropout_are_an_error():
    result = runner.invoke(app, ["train", "digits", "--p-gen", "0.4"])
    assert result.exit_code == 2 and "--p-gen" in result.output and "--dropout" in result.output


# --------------------------------------------------------------------------------------------
# The CLI explains itself


def commands(command=None, path=()):
    """(path, click command) for every command and sub-command of the app."""
    import typer

    command = command or typer.main.get_command(app)
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def options(command):
    return [p for p in command.params if p.param_type_name == "option" and p.name != "help"]


def test_every_option_of_every_command_has_a_help_text():
    found = [(path, o.opts) for path, command in commands() for o in options(command)]
    assert len(found) > 100
    missing = [f"{' '.join(path)} {o.opts[0]}" for path, command in commands()
               for o in options(command) if not (o.help or "").strip()]
    assert not missing, f"options without help: {missing}"


def test_scan_help_shows_every_option_with_its_help_and_defaults():
    import typer

    scan = typer.main.get_command(app).commands["scan"]
    result = runner.invoke(app, ["scan", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for option in options(scan):
        assert option.opts[0] in result.output, option.opts[0]
    for name in ("--epochs", "--width", "--arch", "--batch-size", "--lr", "--overwrite"):
        assert name in result.output
    batch = next(line for line in result.output.splitlines() if "--batch-size " in line)
    assert "Training batch size [default: auto]" in batch
    assert "Width multiplier of the network" in result.output
    assert "[default: consensus, else cutoff" in result.output  # --rank-by, not eaten by markup
    assert "--no-" not in result.output


def test_version_prints_the_version_and_exits_0():
    from noisefind import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"noisefind {__version__}"


def test_commands_are_listed_in_workflow_order():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    order = ["train", "scan", "review", "export", "bench", "localize", "memorization",
             "evaluate"]
    listed = [line.split()[1] for line in result.output.splitlines()
              if len(line.split()) > 1 and line.split()[1] in order]
    assert listed == order


def test_yes_no_options_are_plain_flags():
    both = [f"{' '.join(path)} {o.opts[0]}" for path, command in commands()
            for o in options(command) if getattr(o, "is_flag", False) and o.secondary_opts]
    assert not both, f"--flag/--no-flag options: {both}"


def test_training_options_are_the_same_on_every_training_command():
    import typer

    group = typer.main.get_command(app)
    shared = ("epochs", "width", "arch", "batch_size", "lr")
    seen = {}
    for name in ("train", "scan", "bench", "memorization"):
        by_name = {o.name: o for o in options(group.commands[name])}
        assert set(shared) <= set(by_name), name
        seen[name] = {n: (by_name[n].help, by_name[n].default) for n in shared}
    assert len({str(v) for v in seen.values()}) == 1, seen


def test_an_errors_parameter_is_said_as_its_flag():
    from noisefind.base.errors import NoisefindError
    from noisefind.cli.app import flag_message

    def say(message, parameter, names=None):
        return flag_message(NoisefindError(message, parameter=parameter), names)

    assert say("limit must be at least 1, got 0", "limit") == "--limit must be at least 1, got 0"
    assert say("max_units 0: set max_units >= 1", "max_units") == \
        "--max-units 0: set max_units >= 1"  # the first whole word only
    assert say("rank_by='flip' needs folds", "folds") == "rank_by='flip' needs --folds"
    assert say("a seed_limit, then seed", "seed") == "a seed_limit, then --seed"
    assert say("--seed must be set; seed", "seed") == "--seed must be set; --seed"
    assert say("file x.csv exists", "file", {"file": "--out"}) == "--out x.csv exists"
    assert say("no parameter here", None) == "no parameter here"
    assert say("out runs/out exists", "out") == "--out runs/out exists"
    assert say("a/limit/b: limit", "limit") == "a/limit/b: --limit"  # not inside a path


def test_several_parameters_are_said_as_flags():
    from noisefind.base.errors import NoisefindError
    from noisefind.cli.app import flag_message

    def say(message, *parameters):
        return flag_message(NoisefindError(message, parameter=parameters))

    assert say("rank_by cutoff needs the cutoff; leave out cutoff none", "rank_by", "cutoff") \
        == "--rank-by cutoff needs the cutoff; leave out --cutoff none"
    assert say("cannot resume: epochs 3 (the model: 2); rerun without resume", "epochs",
               "resume") == "cannot resume: --epochs 3 (the model: 2); rerun without --resume"
    assert say("out o holds a scan; continue it with resume, replace it with overwrite", "out",
               "resume", "overwrite") == ("--out o holds a scan; continue it with --resume, "
                                          "replace it with --overwrite")


def test_the_error_wrapper_exits_2_with_one_flag_line(capsys):
    import typer

    from noisefind.base.errors import NoisefindError
    from noisefind.cli.app import exits_cleanly

    @exits_cleanly
    def bad():
        raise NoisefindError("canary_recall must be in (0, 1], got [2]",
                             parameter="canary_recall")

    @exits_cleanly
    def broken():
        raise RuntimeError("out of memory")

    @exits_cleanly
    def interrupted():
        raise KeyboardInterrupt

    for command, status in ((bad, 2), (broken, 1), (interrupted, 130)):
        with pytest.raises(typer.Exit) as exit_info:
            command()
        assert exit_info.value.exit_code == status
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: --canary-recall must be in (0, 1], got [2]"
    assert err[1] == "failed: RuntimeError: out of memory"


def test_option_names_keep_one_meaning():
    """--out is an output folder everywhere but export (a file, said in its help); --folds is
    K of K-fold wherever it appears."""
    folds, outs = [], []
    for path, command in commands():
        for option in options(command):
            if option.opts[0] == "--folds":
                folds.append(option.help)
            if option.opts[0] == "--out":
                outs.append((path, option.help))
    assert len(folds) == 2 and all(h.startswith("K of the K-fold") for h in folds)
    for path, text in outs:
        if path == ("export",):
            assert "FILE" in text and "not a folder" in text
        else:
            assert text.startswith("Output folder"), (path, text)


DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def digits_rank_files(tmp_path_factory):
    """The digits with 10% of the labels wrong: 5-fold logistic-regression probabilities (column
    k is digit k), the pixels as features, and the labels in a manifest with the truth, as
    numbers (``m.csv``) and as names (``names.csv``)."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    folder = tmp_path_factory.mktemp("digits-rank")
    x, truth = load_digits(return_X_y=True)
    x = x / 16.0
    rng = np.random.default_rng(0)
    labels = truth.copy()
    wrong = rng.random(len(labels)) < 0.1
    labels[wrong] = (truth[wrong] + rng.integers(1, 10, wrong.sum())) % 10
    probabilities = cross_val_predict(LogisticRegression(max_iter=2000), x, labels, cv=5,
                                      method="predict_proba")
    np.save(folder / "p.npy", probabilities.astype(np.float32))
    np.save(folder / "f.npy", x.astype(np.float32))
    pd.DataFrame({"label": labels, "true_label": truth}).to_csv(folder / "m.csv", index=False)
    names = np.array(DIGIT_NAMES)
    pd.DataFrame({"label": names[labels], "true_label": names[truth]}).to_csv(
        folder / "names.csv", index=False)
    return folder, labels, truth, wrong


def test_rank_from_real_out_of_sample_probabilities_writes_the_ranking_and_exports(
        digits_rank_files, tmp_path):
    """``noisefind rank`` on the digits: 5-fold logistic-regression probabilities, the pixels
    as features and a manifest with the truth; then ``export`` drops the flagged rows."""
    import pandas as pd

    files, labels, truth, wrong = digits_rank_files
    out = tmp_path / "ranked"
    result = runner.invoke(app, ["rank", str(files / "m.csv"), "--pred-probs",
                                 str(files / "p.npy"), "--features", str(files / "f.npy"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert f"about {summary['estimated_mislabeled']:.0f} of 1797 labels wrong" in result.output
    assert "witnesses: out_of_sample, neighbours; counted on pred_probs;" in result.output
    assert "AUROC" in result.output and summary["auroc_consensus_score"] > 0.97
    assert abs(summary["estimated_mislabeled"] / wrong.sum() - 1) < 0.25
    assert (out / "report.html").is_file()
    exported = runner.invoke(app, ["export", str(out), "--drop", "--out",
                                   str(tmp_path / "clean.csv")])
    assert exported.exit_code == 0, exported.output
    clean = pd.read_csv(tmp_path / "clean.csv")
    assert len(clean) == 1797 - summary["flagged"]
    kept_wrong = (labels[clean["index"]] != truth[clean["index"]]).sum()
    assert kept_wrong < 0.3 * wrong.sum()


def test_rank_reads_label_names_in_the_order_of_classes(digits_rank_files, tmp_path):
    """Names in the labels' CSV are sorted unless ``--classes`` gives the probabilities' column
    order; sorted names against numbered columns are warned of, not ranked in silence."""
    files, _, _, _ = digits_rank_files
    args = ["rank", str(files / "names.csv"), "--pred-probs", str(files / "p.npy"), "--top", "0"]
    unordered = runner.invoke(app, [*args, "--out", str(tmp_path / "sorted")])
    assert unordered.exit_code == 0, unordered.output
    assert "warning: for 9 of 10 classes" in unordered.output
    assert "--classes gives the columns' order" in unordered.output
    assert "scanned examples" not in unordered.output  # --top 0: no table of suspects
    named = runner.invoke(app, [*args, "--classes", ",".join(DIGIT_NAMES),
                                "--out", str(tmp_path / "named")])
    assert named.exit_code == 0, named.output
    assert "warning" not in named.output
    summary = json.loads((tmp_path / "named" / "summary.json").read_text())
    assert summary["auroc_consensus_score"] > 0.95 and "warnings" not in summary


@pytest.mark.parametrize("args,message", [
    (["rank", "missing.npy", "--pred-probs", "p.npy"], "LABELS missing.npy: no such file"),
    (["rank", "labels.npy"], "give --pred-probs, --features or both"),
    (["rank", "labels.npy", "--pred-probs", "labels.npy"], "--pred-probs must be (40, C)"),
    (["rank", "labels.npy", "--features", "p.txt"], "--features p.txt: give an existing .npy"),
    (["rank", "p.npy", "--features", "p.npy"], "LABELS p.npy: give a 1-D array of integer"),
    (["rank", "labels.npy", "--features", "p.npy", "--count-from", "pred_probs"],
     "--count-from is pred_probs but no --pred-probs are given"),
    (["rank", "labels.npy", "--pred-probs", "p.npy", "--count-from", "neighbours"],
     "--count-from must be one of pred_probs, features, got 'neighbours'"),
    (["rank", "labels.npy", "--pred-probs", "p.npy", "--classes", "a,b,c"],
     "--pred-probs has 4 columns for 3 --classes"),
    (["rank", "names.csv", "--pred-probs", "p.npy", "--classes", "a,b,c,x"],
     "LABELS: 1 label(s) not among --classes (4 given), first 'd'"),
])
def test_rank_bad_input_exits_2_with_one_line(args, message, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    np.save("labels.npy", np.arange(40) % 4)
    np.save("p.npy", np.full((40, 4), 0.25))
    Path("names.csv").write_text("label\n" + "\n".join("abcd"[k % 4] for k in range(40)) + "\n")
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_results_go_to_stdout_and_progress_to_stderr(tmp_path):
    """``noisefind scan ... > results.txt`` keeps the results; the progress stays on stderr."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "noisefind", "scan", "digits", "--noise", "symmetric:0.1",
         "--epochs", "3", "--width", "0.25", "--limit", "60", "--folds", "0", "--max-units",
         "5", "--canary-fraction", "0.05", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    low, high = summary["estimated_mislabeled_interval"]
    assert (f"about {summary['estimated_mislabeled']} of 1797 labels wrong "
            f"({low:.0f}-{high:.0f})") in done.stdout
    assert "against the true labels:" in done.stdout and "AUROC" in done.stdout
    assert "wrote " in done.stdout and "top 10 of 60 scanned examples" in done.stdout
    assert "[1/" in done.stderr and "[1/" not in done.stdout  # the stages: progress


def test_readme_rank_example_runs(tmp_path, monkeypatch):
    """The README's ``noisefind rank`` line, as written, on files of those names made from
    the digits (5-fold probabilities, the pixels as embeddings)."""
    import re
    import shlex

    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    line = re.search(r"^noisefind rank .*$", readme, re.M).group(0)
    x, labels = load_digits(return_X_y=True)
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"label": labels}).to_csv("labels.csv", index=False)
    np.save("oof_probs.npy", cross_val_predict(LogisticRegression(max_iter=3000), x / 16.0,
                                               labels, cv=5, method="predict_proba"))
    np.save("embeddings.npy", x)
    result = runner.invoke(app, shlex.split(line)[1:])
    assert result.exit_code == 0, result.output
    summary = json.loads(Path("noisefind-rank/summary.json").read_text())
    assert summary["witnesses"] == ["out_of_sample", "neighbours"]


def test_the_count_says_when_weak_held_out_models_may_put_it_far_off(capsys):
    from noisefind.cli.app import print_count

    folder = {"examples": 450, "estimated_mislabeled": 106,
              "estimated_mislabeled_interval": [72, 147]}
    print_count({**folder, "cutoff": {"held_out_agreement": 0.662}})  # a default scan's
    said = capsys.readouterr().out
    assert "about 106 of 450 labels wrong (72-147)" in said
    assert "miss another 10% of the given labels" in said and "may be far off" in said
    print_count({**folder, "held_out_agreement": 0.662})  # noisefind rank's summary
    assert "may be far off" in capsys.readouterr().out
    strong = {"examples": 1797, "estimated_mislabeled": 185,
              "estimated_mislabeled_interval": [159, 206], "cutoff": {"held_out_agreement": 0.876}}
    print_count(strong)  # 12% missed, 10% counted: nothing more to say
    said = capsys.readouterr().out
    assert "about 185 of 1797" in said and "may be far off" not in said


def test_the_count_s_caution_needs_a_count_and_the_held_out_agreement():
    from noisefind.scanning.outputs import count_caution

    weak = {"examples": 450, "estimated_mislabeled": 106, "cutoff": {"held_out_agreement": 0.662}}
    assert "may be far off" in count_caution(weak)
    assert count_caution({**weak, "estimated_mislabeled": None}) is None  # --cutoff none
    assert count_caution({"examples": 450, "estimated_mislabeled": 106}) is None  # no agreement

