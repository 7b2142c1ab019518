"""--recipe and --list-recipes through main.py, and the best/final bookkeeping of report.json."""
import json
import math

import pytest

import main as cli
import recipes
from conftest import TINY, make_image_folder


def test_recipe_sets_defaults_and_a_given_flag_wins():
    args = cli.parse_args(["--recipe", "resnet18", "--lr", "0.05"])
    assert (args.model_name, args.optimizer, args.lr, args.weight_decay) == ("resnet18", "sgd", 0.05, 5e-4)
    args = cli.parse_args(["--recipe", "cct_7_3x1", "--dataset", "c100"])
    assert (args.lr, args.random_erasing) == (6e-4, 0.25)  # the per-dataset row
    assert cli.parse_args(["--recipe", "cct_7_3x1"]).lr == 5.5e-4


def test_vit_cifar_recipe_changes_nothing():
    plain, recipe = vars(cli.parse_args([])), vars(cli.parse_args(["--recipe", "vit_cifar"]))
    assert {k: v for k, v in recipe.items() if plain[k] != v} == {"recipe": "vit_cifar"}


def test_unknown_recipe_is_one_line(capsys):
    assert cli.cli(["--recipe", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown recipe 'nope'" in err[0] and "vit_cifar" in err[0]


def test_list_recipes_prints_every_row(capsys):
    assert cli.cli(["--list-recipes"]) == 0
    out = capsys.readouterr().out
    for name in recipes.RECIPES.names():
        assert name in out
    assert "omihub777/ViT-CIFAR" in out and "90.92%" in out


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in recipes.RECIPES.names() if not recipes.RECIPES.get(n).model_missing])
def test_every_recipe_dry_runs_on_the_cpu(name, tmp_path, one_thread):
    data = make_image_folder(str(tmp_path / "data"), n_train=8, n_test=4)
    args = cli.parse_args(["--recipe", name, "--dataset", "folder", "--data-dir", data, "--dry-run", "--workers", "0",
                           "--no-progress", "--batch-size", "8", "--eval-batch-size", "8"])
    history = cli.main(args)
    assert len(history) == 1 and math.isfinite(history[0]["train_loss"])


def test_report_gives_best_and_final(tmp_path, one_thread):
    data = make_image_folder(str(tmp_path / "data"), n_train=16, n_test=6)
    out = tmp_path / "run"
    args = cli.parse_args(["--dataset", "folder", "--data-dir", data, "--output-dir", str(out), "--max-epochs", "3",
                           "--recipe", "vit_cifar", *TINY])
    history = cli.main(args)
    report = json.loads((out / "report.json").read_text())
    best = max(history, key=lambda r: r["test_acc"])
    assert report["final_epoch"] == 3 and report["final_test_acc"] == pytest.approx(report["accuracy"])
    assert report["best_test_acc"] == pytest.approx(best["test_acc"]) and report["best_epoch"] == best["epoch"]
    assert report["best_chosen_on"].startswith("test")
    assert json.loads((out / "config.json").read_text())["recipe"] == "vit_cifar"


def test_best_is_chosen_on_validation_with_val_split(tmp_path, one_thread):
    data = make_image_folder(str(tmp_path / "data"), n_train=16, n_test=6)
    out = tmp_path / "run"
    history = cli.main(cli.parse_args(["--dataset", "folder", "--data-dir", data, "--output-dir", str(out),
                                       "--max-epochs", "3", "--val-split", "16", *TINY]))
    report = json.loads((out / "report.json").read_text())
    best = max(history, key=lambda r: r["val_acc"])
    assert report["best_chosen_on"] == "validation" and report["best_epoch"] == best["epoch"]
    assert report["best_val_acc"] == pytest.approx(best["val_acc"])
    assert (out / "model_best.pth").exists() and 0 <= report["best_test_acc"] <= 1


def test_repeated_augmentation_on_both_input_paths():
    """--repeated-aug 3: each drawn image three times in a row, the epoch as long as without,
    and on the device path the three copies augmented independently."""
    import torch

    from loaders import DeviceSource, WorkerSource, repeat_order

    order = repeat_order(torch.randperm(12, generator=torch.Generator().manual_seed(0)), 3)
    assert len(order) == 12 and all((order[i:i + 3] == order[i]).all() for i in range(0, 12, 3))
    x = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(12)
    dev = DeviceSource(x, y, 6, 2, True, None, torch.device("cpu"), repeats=3)
    dev.set_epoch(0, 0)
    (xa, ya), (xb, yb) = list(dev)
    assert ya.tolist()[:3] == [ya[0].item()] * 3 and len(set(ya.tolist() + yb.tolist())) == 4
    assert not torch.equal(xa[0], xa[1]) or not torch.equal(xa[1], xa[2])  # other crops/flips of one image
    work = WorkerSource(x, y, 6, 2, True, None, torch.device("cpu"), workers=0, repeats=3)
    work.set_epoch(0, 0)
    labels = [lab for _, yy in work for lab in yy.tolist()]
    assert len(labels) == 12 and all(labels[i] == labels[i + 1] == labels[i + 2] for i in range(0, 12, 3))


def test_the_final_report_reuses_the_last_epochs_test_pass(tmp_path, one_thread, monkeypatch):
    """The last epoch's evaluation and report.json are one computation (same weights): the test
    set is passed over once at the end, not twice."""
    import evaluation
    import train

    calls = []
    real = evaluation.predict_logits
    monkeypatch.setattr(train, "predict_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = make_image_folder(str(tmp_path / "data"), n_train=8, n_test=4)
    out = tmp_path / "run"
    history = cli.main(cli.parse_args(["--dataset", "folder", "--data-dir", data, "--output-dir", str(out),
                                       "--max-epochs", "2", *TINY]))
    report = json.loads((out / "report.json").read_text())
    assert len(calls) == 1 and report["accuracy"] == history[-1]["test_acc"]
    assert report["test_loss"] == pytest.approx(history[-1]["test_loss"])
