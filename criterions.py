"""Losses, selected by `--criterion` (and `--label-smoothing` / `--smoothing`).

ViT-CIFAR's label smoothing spreads the smoothing mass over the C-1 *wrong* classes:

    target = (1 - s) on the true class, s / (C - 1) on each other class

torch's `CrossEntropyLoss(label_smoothing=s)` spreads it over *all* C classes instead:

    target = (1 - s) + s / C on the true class, s / C on each other class

so at s=0.1, C=10 the true class gets 0.9 here and 0.91 in torch. `--criterion ce` with
`--label-smoothing` uses the original's form; `--criterion torch_ls` uses torch's.
"""
import torch
import torch.nn as nn

from utils import Registry

CRITERIONS = Registry("criterion")


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross-entropy against the smoothed target above (smoothing over the C-1 wrong classes)."""

    def __init__(self, num_classes, smoothing=0.1):
        super().__init__()
        if num_classes < 2:
            raise ValueError("label smoothing needs at least 2 classes")
        self.num_classes = num_classes
        self.smoothing = smoothing

    def forward(self, logits, target):
        log_probs = logits.float().log_softmax(dim=-1)
        off = self.smoothing / (self.num_classes - 1)
        true_dist = torch.full_like(log_probs, off)
        true_dist.scatter_(1, target.unsqueeze(1), 1.0 - self.smoothing)
        return -(true_dist * log_probs).sum(dim=-1).mean()


@CRITERIONS.register("ce")
def build_ce(num_classes, label_smoothing=False, smoothing=0.1):
    if label_smoothing and smoothing > 0:
        return LabelSmoothingCrossEntropy(num_classes, smoothing)
    return nn.CrossEntropyLoss()


@CRITERIONS.register("torch_ls")
def build_torch_ls(num_classes, label_smoothing=True, smoothing=0.1):
    return nn.CrossEntropyLoss(label_smoothing=smoothing if label_smoothing else 0.0)


def mixed_loss(criterion, logits, target, target_b=None, lam=1.0):
    """Loss for a batch mixed by Mixup/CutMix/...: lam * L(y_a) + (1 - lam) * L(y_b), as the original."""
    loss = criterion(logits, target)
    if target_b is None:
        return loss
    return lam * loss + (1.0 - lam) * criterion(logits, target_b)


def mixed_correct(logits, target, target_b=None, lam=1.0):
    """Number of correct predictions, counting a mixed batch by its lam-weighted targets."""
    pred = logits.argmax(dim=-1)
    correct = (pred == target).float()
    if target_b is not None:
        correct = lam * correct + (1.0 - lam) * (pred == target_b).float()
    return correct.sum()
