"""criterions.py: label smoothing against its formula, and the mixed-batch loss."""
import torch
import torch.nn.functional as F

from criterions import CRITERIONS, LabelSmoothingCrossEntropy, mixed_correct, mixed_loss


def test_label_smoothing_matches_formula():
    torch.manual_seed(0)
    logits, target = torch.randn(5, 10), torch.randint(0, 10, (5,))
    s = 0.1
    log_p = F.log_softmax(logits.double(), dim=-1)
    expected = 0.0
    for i in range(5):
        for c in range(10):
            weight = 1 - s if c == target[i] else s / 9
            expected -= weight * log_p[i, c]
    expected /= 5
    got = LabelSmoothingCrossEntropy(10, s)(logits, target)
    assert abs(got.item() - expected.item()) < 1e-6


def test_original_and_torch_smoothing_differ_as_documented():
    logits, target = torch.randn(4, 10), torch.randint(0, 10, (4,))
    ours = CRITERIONS.build("ce", 10, True, 0.1)(logits, target)
    torchs = CRITERIONS.build("torch_ls", 10, True, 0.1)(logits, target)
    assert torchs.item() == F.cross_entropy(logits, target, label_smoothing=0.1).item()
    # torch's target is ours with the true class's weight moved from 0.9 to 0.91 (and others 1/90 -> 1/100).
    log_p = F.log_softmax(logits, dim=-1)
    mean_logp = log_p.mean(-1)
    true_logp = log_p.gather(1, target[:, None]).squeeze(1)
    ours_again = -(0.9 * true_logp + 0.1 / 9 * (10 * mean_logp - true_logp)).mean()
    assert abs(ours.item() - ours_again.item()) < 1e-5
    assert abs(ours.item() - torchs.item()) > 1e-4


def test_no_smoothing_is_plain_cross_entropy():
    logits, target = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    assert CRITERIONS.build("ce", 3, False, 0.1)(logits, target).item() == F.cross_entropy(logits, target).item()


def test_mixed_loss_and_accuracy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    y_a, y_b = torch.tensor([0, 0]), torch.tensor([1, 1])
    ce = torch.nn.CrossEntropyLoss()
    assert torch.isclose(mixed_loss(ce, logits, y_a, y_b, 0.3), 0.3 * ce(logits, y_a) + 0.7 * ce(logits, y_b))
    assert mixed_loss(ce, logits, y_a) == ce(logits, y_a)
    assert torch.isclose(mixed_correct(logits, y_a, y_b, 0.25), torch.tensor(0.25 * 1 + 0.75 * 1))
