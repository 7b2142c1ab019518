"""The tools around a trained run: evaluation.py, predict.py, plot.py, export.py, pretrained.py
and sweep.py, on one tiny run trained once for the whole module."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import main as cli
from conftest import TINY, make_image_folder
from utils import UserError

import evaluation
import export
import plot
import predict


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, data folder) of a 2-epoch run on the learnable 4-class task."""
    root = tmp_path_factory.mktemp("tools")
    data = make_image_folder(str(root / "data"), n_train=6, n_test=3)
    out = root / "run"
    args = cli.get_args_parser().parse_args(["--dataset", "folder", "--data-dir", data, "--output-dir", str(out),
                                             "--max-epochs", "2", "--lr", "2e-3", *TINY])
    cli.main(args)
    return str(out), data


# ---------------------------------------------------------------- evaluation.py

def test_report_matches_hand_computed_values():
    classes = ["a", "b", "c", "d"]  # d: never a label, never predicted
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.nn.functional.one_hot(preds, 4).float() * 3
    report = evaluation.classification_report(logits, labels, classes)
    assert report["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    # F1 = 2tp / (2tp + fp + fn): a 4/5, b 2/4, c 2/3; d takes no part in the macro average.
    assert report["macro_f1"] == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)
    assert report["per_class_accuracy"] == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 1.0, "d": None})
    assert report == evaluation.classification_report(logits.softmax(-1), labels, classes)  # ranks only


def test_top5_on_a_known_ranking():
    scores = torch.arange(7, 0, -1).float().repeat(4, 1)  # class 0 first ... class 6 last
    report = evaluation.classification_report(scores, torch.tensor([0, 4, 5, 6]), list("abcdefg"))
    assert report["top5"] == 0.5 and report["accuracy"] == 0.25
    with pytest.raises(UserError):
        evaluation.classification_report(scores, torch.tensor([0, 1]), list("abcdefg"))


def test_tta_is_the_mean_of_the_two_softmaxes(trained):
    run, _ = trained
    model, config = evaluation.load_run(run)
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    args = (config["mean"], config["std"], config["image_size"], "cpu")
    plain = evaluation.predict_logits(model, x, *args).softmax(-1)
    mirrored = evaluation.predict_logits(model, x.flip(-1), *args).softmax(-1)
    tta = evaluation.predict_logits(model, x, *args, batch_size=2, tta=True)
    assert torch.allclose(tta.softmax(-1), (plain + mirrored) / 2, atol=1e-6)
    assert not torch.allclose(plain, mirrored)  # else the test would prove nothing


def test_ensemble_of_identical_models_equals_one(trained):
    run, _ = trained
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    probs = []
    for weights in ("model.pth", "checkpoint.pt"):  # the same final weights, stored two ways
        model, config = evaluation.load_run(os.path.join(run, weights))
        probs.append(evaluation.predict_logits(model, x, config["mean"], config["std"], 32, "cpu").softmax(-1))
    assert torch.allclose(evaluation.ensemble(probs), probs[0], atol=1e-6)
    other = torch.rand(4, 4)
    assert torch.allclose(evaluation.ensemble([probs[0], other]), (probs[0] + other) / 2)
    with pytest.raises(UserError):
        evaluation.ensemble([probs[0], torch.rand(3, 4)])


def test_load_run_errors_are_user_errors(trained, tmp_path):
    with pytest.raises(UserError, match="no such run"):
        evaluation.load_run(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="config.json"):
        evaluation.load_run(str(tmp_path))
    path = evaluation.write_report({"accuracy": 0.5}, str(tmp_path / "r.json"))
    assert json.loads(open(path).read()) == {"accuracy": 0.5}


# ---------------------------------------------------------------- predict.py

def test_predict_writes_csv_matching_evaluate(trained, tmp_path, capsys):
    from data import load_folder
    from loaders import EvalLoader, Normalize

    run, data_dir = trained
    extra = tmp_path / "extra"
    extra.mkdir()
    Image.fromarray(np.full((40, 50), 200, np.uint8)).save(extra / "gray.jpg")  # other size and mode
    (extra / "broken.png").write_text("not an image")
    out = tmp_path / "pred.csv"
    test_dir = os.path.join(data_dir, "test")
    assert predict.cli(["--run", run, test_dir, str(extra), "--out", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.png" in err[0]
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "predicted_class", "confidence", "top5"]
    assert len(rows) == 12 + 1
    classes = ["class0", "class1", "class2", "class3"]
    for row in rows:
        top = [pair.split(":") for pair in row["top5"].split(";")]
        assert [c for c, _ in top][0] == row["predicted_class"] and sorted(c for c, _ in top) == classes
        probs = [float(p) for _, p in top]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)
        assert float(row["confidence"]) == probs[0]

    # The same images through the training code's evaluation path.
    model, config = evaluation.load_run(run)
    data = load_folder(data_dir, 32)
    loader = EvalLoader(data.test_x, data.test_y, 64, Normalize(config["mean"], config["std"], 32, "cpu"),
                        torch.device("cpu"), on_device=False)
    with torch.no_grad():  # the batches evaluate() sees, through the model
        logits = torch.cat([model(x) for x, _ in loader])
    files = [p for p, _ in torchvision.datasets.ImageFolder(test_dir).samples]
    predicted = {r["file"]: r["predicted_class"] for r in rows}
    assert [predicted[f] for f in files] == [classes[i] for i in logits.argmax(-1).tolist()]


def test_predict_without_images_is_one_line_and_exit_2(trained, tmp_path, capsys):
    run, _ = trained
    (tmp_path / "notes.txt").write_text("no image here")
    for inputs in ([str(tmp_path)], [str(tmp_path / "missing.png")]):
        assert predict.cli(["--run", run, *inputs, "--out", str(tmp_path / "p.csv")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: no images found")
    assert not (tmp_path / "p.csv").exists()


# ---------------------------------------------------------------- plot.py

def test_plots_are_drawn_and_runs_overlaid(trained, tmp_path):
    run, _ = trained
    curves = plot.plot_run(run)
    assert curves == os.path.join(run, "curves.png") and os.path.getsize(curves) > 10_000
    other = tmp_path / "second_run"
    other.mkdir()
    shutil.copy(os.path.join(run, "metrics.csv"), other / "metrics.csv")
    fig = plot.draw_curves({"run": plot.read_metrics(run), "second_run": plot.read_metrics(str(other))})
    legend = fig.axes[1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["run", "second_run"]
    out = tmp_path / "compare.png"
    assert plot.cli([run, str(other), "--out", str(out)]) == 0 and out.stat().st_size > 10_000
    confusion = plot.plot_confusion([[3, 1], [0, 4]], ["x", "y"], str(tmp_path / "confusion.png"))
    assert os.path.getsize(confusion) > 5_000
    assert plot.cli([str(tmp_path / "nowhere")]) == 2


# ---------------------------------------------------------------- export.py

@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_round_trip_and_metadata(trained, tmp_path, fmt):
    run, _ = trained
    out = str(tmp_path / f"model.{fmt}")
    path, diff = export.export(run, fmt, out)
    assert path == out and diff <= 1e-4
    meta = export.read_onnx_metadata(out) if fmt == "onnx" else export.load_torchscript(out)[1]
    config = json.loads(open(os.path.join(run, "config.json")).read())
    for key in ("mean", "std", "image_size", "in_chans", "classes"):
        assert meta[key] == config[key]
    # The exported file alone classifies normalised images as the PyTorch model does.
    model, _ = evaluation.load_run(run)
    x = torch.randn(3, 3, 32, 32)
    run_export = export.run_onnx(out) if fmt == "onnx" else export.load_torchscript(out)[0]
    with torch.no_grad():
        assert torch.allclose(run_export(x), model(x), atol=1e-4)


def test_export_failures_exit_1_and_bad_runs_exit_2(trained, tmp_path, monkeypatch, capsys):
    run, _ = trained
    assert export.cli(["--run", str(tmp_path), "--format", "onnx"]) == 2
    assert "config.json" in capsys.readouterr().err

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator\nmore detail")
    monkeypatch.setattr(export, "export_torchscript", broken)
    assert export.cli(["--run", run, "--format", "torchscript", "--out", str(tmp_path / "m.pt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot export vit to torchscript" in err
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # any difference, even 0, is now too much
    assert export.cli(["--run", run, "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 1


# ---------------------------------------------------------------- pretrained.py

@pytest.mark.parametrize("arch, head", [("resnet18", "fc"), ("vit_tiny_patch16_224", "head")])
def test_pretrained_timm_loads_a_local_state_dict(tmp_path, arch, head):
    import timm
    from pretrained import build_pretrained

    source = timm.create_model(arch)
    path = str(tmp_path / "weights.pth")
    torch.save(source.state_dict(), path)
    model, size = build_pretrained(f"timm/{arch}", 5, 3, weights=path)
    assert size == 224 and getattr(model, head).out_features == 5
    name = next(n for n in source.state_dict() if not n.startswith(head) and "weight" in n and "norm" not in n)
    assert torch.equal(model.state_dict()[name], source.state_dict()[name])
    first = source.pretrained_cfg["first_conv"] + ".weight"
    gray, _ = build_pretrained(f"timm/{arch}", 5, 1, weights=path)  # grayscale: RGB filters summed
    assert torch.allclose(gray.state_dict()[first], source.state_dict()[first].sum(1, keepdim=True))


def test_pretrained_torchvision_and_errors(tmp_path):
    from pretrained import build_pretrained

    source = torchvision.models.get_model("resnet18", weights=None)
    path = str(tmp_path / "r18.pth")
    torch.save(source.state_dict(), path)
    model, size = build_pretrained("tv/resnet18", 10, 3, weights=path)
    assert size == 224 and model.fc.out_features == 10
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(UserError, match="does not fit"):
        build_pretrained("tv/resnet34", 10, 3, weights=path)
    with pytest.raises(UserError, match="unknown timm model"):
        build_pretrained("timm/no_such_net", 10, 3)
    with pytest.raises(UserError, match="timm/<name> or tv/<name>"):
        build_pretrained("resnet18", 10, 3)


# ---------------------------------------------------------------- sweep.py

def _takes_callbacks():
    import inspect
    return "epoch_callbacks" in inspect.signature(cli.main).parameters


needs_hook = pytest.mark.skipif(not _takes_callbacks(),
                                reason="main.main takes no epoch_callbacks yet (sweep.py reports epochs through it)")


@pytest.mark.slow
@needs_hook
def test_sweep_runs_resumes_and_writes_best(tmp_path):
    import optuna
    import sweep

    data = make_image_folder(str(tmp_path / "data"), n_train=4, n_test=2)
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    argv = ["--study", "tiny", "--storage", storage, "--pruner", "median", "--out-dir", str(tmp_path / "sweep"),
            "--seed", "0", "--param", "lr=loguniform:1e-4:1e-2", "--param", "dropout=uniform:0:0.3",
            "--param", "batch-size=choice:8,16", "--",
            "--dataset", "folder", "--data-dir", data, "--max-epochs", "2", *TINY, "--num-layers", "1",
            "--hidden", "32", "--mlp-hidden", "32", "--head", "2"]
    assert sweep.cli(["--trials", "2", *argv]) == 0
    assert sweep.cli(["--trials", "1", *argv]) == 0  # the same study, continued from the SQLite file
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert len(trials) == 3 and all(t.state.name == "COMPLETE" for t in trials)
    for t in trials:  # every epoch reached Optuna through the hook
        assert sorted(t.intermediate_values) == [1, 2]
        assert 1e-4 <= t.params["lr"] <= 1e-2 and t.params["batch-size"] in (8, 16)
        assert os.path.isfile(os.path.join(t.user_attrs["output_dir"], "model.pth"))
    best = json.loads((tmp_path / "sweep" / "best.json").read_text())
    assert best["trials"] == {"complete": 3} and best["best_params"].keys() == {"lr", "dropout", "batch-size"}
    assert "--output-dir" in best["main_argv"]


def test_sweep_rejects_bad_params(tmp_path, capsys):
    import sweep

    base = ["--study", "x", "--storage", f"sqlite:///{tmp_path / 's.db'}"]
    for bad in ["lr=gauss:1:2", "lr=loguniform:0:1", "no-such-flag=uniform:0:1", "lr=uniform:1"]:
        assert sweep.cli([*base, "--param", bad, "--", "--dataset", "folder"]) == 2
    assert sweep.cli([*base, "--param", "lr=uniform:0.1:0.2", "--", "--output-dir", "x"]) == 2
    assert sweep.cli([*base, "--param", "lr=uniform:0.1:0.2", "--", "--bogus-flag"]) == 2
    assert all(line.startswith("error: ") for line in capsys.readouterr().err.strip().splitlines())
    assert sweep.parse_param("batch-size=choice:64,128") == ("batch-size", "choice", [64, 128])
