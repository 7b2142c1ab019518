"""Everything done with a trained model after training: load it back from its run folder,
predict (optionally with flip test-time augmentation), ensemble, and score.

    model, config = load_run("runs/vit_c10", device)
    logits = predict_logits(model, x_uint8, config["mean"], config["std"], config["input_size"], device)
    write_report(classification_report(logits, labels, config["classes"]), "report.json")

A run folder holds config.json (every resolved flag plus classes, mean, std, in_chans) and
model.pth; predict.py, export.py and protocol.py rebuild the model from there with load_run.
main.py's final and --eval-only reports go through predict_logits and classification_report.
"""
import json
import os

import torch

from loaders import Normalize
from engine import autocast
from utils import UserError, write_json

WEIGHTS, CONFIG = "model.pth", "config.json"


def find_run(run_dir_or_weights):
    """(config.json path, weights path) for a run folder or a weights file inside one."""
    path = run_dir_or_weights
    if os.path.isdir(path):
        folder, weights = path, os.path.join(path, WEIGHTS)
    elif os.path.isfile(path):
        folder, weights = os.path.dirname(os.path.abspath(path)), path
    else:
        raise UserError(f"{path}: no such run folder or weights file")
    config = os.path.join(folder, CONFIG)
    if not os.path.isfile(config):
        raise UserError(f"{folder} has no {CONFIG}; pass a run folder written by main.py (or weights inside one)")
    if not os.path.isfile(weights):
        raise UserError(f"{folder} has no {WEIGHTS} (the run has not finished); pass {folder}/checkpoint.pt instead")
    return config, weights


def load_config(path):
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}")
    missing = [k for k in ("model_name", "num_classes", "image_size", "in_chans", "mean", "std", "classes")
               if k not in config]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}; it was not written by main.py")
    return config


def load_run(run_dir_or_weights, device="cpu"):
    """(model in eval mode on `device`, config dict) from a run folder or weights file in one.

    The weights may be model.pth, checkpoint.pt or any state dict of the same architecture.
    """
    from build import make_model
    from checkpoint import load_weights
    from flags import get_args_parser

    config_path, weights = find_run(run_dir_or_weights)
    config = load_config(config_path)
    # Start from today's flag defaults, so a config written before a flag existed still loads.
    args = get_args_parser().parse_args([])
    vars(args).update(config)
    args.pretrained = None  # the run's own weights replace whatever the backbone started from
    model = make_model(args, config["in_chans"])
    config["input_size"] = args.input_size  # the side the model takes; images are resized to it
    load_weights(model, weights)
    return model.to(device).eval(), config


@torch.no_grad()
def predict_logits(model, x_uint8, mean, std, image_size, device, batch_size=1024, tta=False, amp_dtype=None):
    """Float32 CPU logits (N, classes) for uint8 images (N, C, H, W), normalised as in training.

    With tta, the result is log of the mean of the softmaxes over each image and its mirror, so
    its softmax is that mean and its argmax the averaged prediction.
    """
    device = torch.device(device)
    normalize = Normalize(mean, std, image_size, device)
    model.eval()
    out = []
    for start in range(0, len(x_uint8), batch_size):
        x = normalize(x_uint8[start:start + batch_size].to(device))
        with autocast(device, amp_dtype):
            logits = model(x).float()
            if tta:
                flipped = model(x.flip(-1)).float()
                logits = ((logits.softmax(-1) + flipped.softmax(-1)) / 2).log()
        out.append(logits.cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def ensemble(list_of_probs):
    """Mean of several models' probabilities (N, classes) over the same images."""
    if not list_of_probs:
        raise UserError("ensemble of no predictions")
    shapes = {tuple(p.shape) for p in list_of_probs}
    if len(shapes) != 1:
        raise UserError(f"cannot ensemble predictions of different shapes: {sorted(shapes)}")
    return torch.stack([torch.as_tensor(p).float() for p in list_of_probs]).mean(0)


def classification_report(probs_or_logits, labels, classes):
    """Accuracy, top-5, macro F1, per-class accuracy (recall) and the confusion matrix.

    Only rankings are used, so probabilities and logits give the same report. macro_f1
    averages over the classes that occur in the labels or the predictions (as scikit-learn
    does); a class with no test images has per-class accuracy None.
    """
    scores = torch.as_tensor(probs_or_logits).float()
    labels = torch.as_tensor(labels).long()
    n_classes = len(classes)
    if scores.ndim != 2 or scores.shape[0] != len(labels) or scores.shape[1] != n_classes:
        raise UserError(f"predictions of shape {tuple(scores.shape)} do not fit {len(labels)} labels "
                        f"and {n_classes} classes")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < n_classes:
        raise UserError(f"labels outside 0..{n_classes - 1}")
    pred = scores.argmax(-1)
    confusion = torch.bincount(labels * n_classes + pred, minlength=n_classes ** 2).view(n_classes, n_classes)
    tp = confusion.diag().double()
    support, predicted = confusion.sum(1).double(), confusion.sum(0).double()
    # F1 = 2 tp / (2 tp + fp + fn); 0 where a class is predicted but never right.
    denom = support + predicted
    f1 = torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    present = denom > 0
    k = min(5, n_classes)
    n = max(len(labels), 1)
    return {
        "num_samples": len(labels),
        "accuracy": (pred == labels).sum().item() / n,
        "top5": (scores.topk(k, -1).indices == labels[:, None]).any(-1).sum().item() / n,
        "macro_f1": f1[present].mean().item() if present.any() else 0.0,
        "per_class_accuracy": {c: (tp[i] / support[i]).item() if support[i] > 0 else None
                               for i, c in enumerate(classes)},
        "per_class_f1": {c: f1[i].item() for i, c in enumerate(classes)},
        "confusion": confusion.tolist(),
        "classes": list(classes),
    }


def write_report(report, path_json):
    write_json(report, path_json)
    return path_json

