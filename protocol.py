"""Evaluation protocols made of several training runs: --folds (K-fold cross-validation) and
--seeds (the same run over several seeds). Each run is an ordinary main() run in its own
sub-folder of --output-dir; the summary is written next to them.
"""
import argparse
import os
import statistics


from evaluation import classification_report, ensemble, load_run, predict_logits
from utils import pick_device, write_json

SUMMARY_METRICS = ("accuracy", "top5", "macro_f1", "test_loss", "final_test_acc", "best_test_acc")


def _sub_run(args, name, **changes):
    sub = argparse.Namespace(**{**vars(args), "folds": 0, "seeds": None, **changes})
    sub.output_dir = os.path.join(args.output_dir, name)
    sub.experiment_name = f"{args.experiment_name}_{name}"
    return sub


def _read_report(run_dir):
    import json
    with open(os.path.join(run_dir, "report.json")) as f:
        return json.load(f)


def _mean_std(reports, extra=()):
    summary = {}
    for key in SUMMARY_METRICS + tuple(extra):
        values = [r[key] for r in reports if r.get(key) is not None]
        if values:
            summary[key] = {"mean": statistics.fmean(values),
                            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}
    return summary


def _print(summary, title):
    print(title)
    for key, s in summary.items():
        if isinstance(s, dict) and "mean" in s:
            print(f"  {key:<12} {s['mean']:.4f} +- {s['std']:.4f}  over {len(s['values'])} runs")


def run_seeds(args, main):
    runs = []
    for seed in args.seeds:
        sub = _sub_run(args, f"seed_{seed}", seed=seed)
        main(sub)
        runs.append(sub.output_dir)
    reports = [_read_report(r) for r in runs]
    summary = {"seeds": args.seeds, "runs": runs, **_mean_std(reports)}
    write_json(summary, os.path.join(args.output_dir, "summary.json"))
    _print(summary, f"{len(runs)} seeds, final test metrics:")
    return summary


def run_folds(args, main):
    runs, val_accs = [], []
    for i in range(args.folds):
        sub = _sub_run(args, f"fold_{i}", fold=(args.folds, i))
        history = main(sub)
        runs.append(sub.output_dir)
        val_accs.append(history[-1]["val_acc"])
    reports = [_read_report(r) for r in runs]
    for report, acc in zip(reports, val_accs):
        report["val_acc"] = acc
    # The folds' models together: the mean of their test-set probabilities.
    device = pick_device(args.device)
    from build import load_data  # the build layer reads the flags
    data = load_data(argparse.Namespace(**{**vars(args), "fold": None, "val_split": 0}))
    probs = []
    for run in runs:
        model, config = load_run(run, device)
        probs.append(predict_logits(model, data.test_x, config["mean"], config["std"], config["input_size"], device,
                                    args.eval_batch_size, tta=args.tta).softmax(-1))
    ens = classification_report(ensemble(probs), data.test_y, data.classes)
    summary = {"folds": args.folds, "runs": runs, **_mean_std(reports, extra=("val_acc",)),
               "ensemble": {k: ens[k] for k in ("accuracy", "top5", "macro_f1")}}
    write_json(summary, os.path.join(args.output_dir, "summary.json"))
    _print(summary, f"{args.folds}-fold cross-validation (val_acc: each fold's held-out part; others: test set):")
    print(f"  ensemble of the {args.folds} folds on the test set: accuracy {ens['accuracy']:.4f}")
    return summary


def run(args, main):
    return run_seeds(args, main) if args.seeds else run_folds(args, main)
