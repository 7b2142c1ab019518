"""Tests for autoaugment.py's draws: the original AutoAugment's sub-policy, application and sign
frequencies (PIL and batched, both op sets), that it applies what it draws and is reproducible from
the global RNG, and RandAugment's and TrivialAugmentWide's op, bin and sign frequencies. CPU only."""

import pytest
import torch
import torchvision.transforms as T

import autoaugment as aa
import policy_kernels
from autoaugment import OP_INDEX, OPS, BatchAutoAugment, BatchRandAugment, BatchTrivialAugmentWide, OriginalAutoAugment
from autoaugment_helpers import _aa_space, from_pil, random_images, to_pil, within
from conftest import gen


# ---------------------------------------------------------------- 3. draws

def check_autoaugment_draws(subs, sub, applied, sign, signed_ops):
    """Sub-policies uniform, op k applied with its probability, signs fair where signed, +1 elsewhere."""
    n = len(sub)
    counts = torch.bincount(sub, minlength=len(subs))
    assert len(subs) == 25 and all(within(int(c), n, 1 / 25) for c in counts)
    for s, sp in enumerate(subs):
        rows = sub == s
        for k, (_, prob, _) in enumerate(sp):
            assert within(int(applied[rows, k].sum()), int(rows.sum()), prob), (s, k)
    is_signed = torch.tensor([[sp[k][0] in signed_ops for k in range(2)] for sp in subs])[sub]
    neg = sign < 0
    assert within(int(neg[is_signed].sum()), int(is_signed.sum()), 0.5)
    return neg, is_signed


@pytest.mark.parametrize("policy", ["cifar10", "svhn"])
def test_original_autoaugment_draw_frequencies(policy):
    aug = OriginalAutoAugment(policy)
    torch.manual_seed(0)
    draws = [aug.draw() for _ in range(10000)]
    sub = torch.tensor([d["sub_policy"] for d in draws])
    applied = torch.tensor([d["applied"] for d in draws])
    sign = torch.tensor([d["sign"] for d in draws])
    subs = [[(aa._canonical(nm), p, b) for nm, p, b in sp] for sp in aa._policy_table(policy)]
    check_autoaugment_draws(subs, sub, applied, sign, policy_kernels.ORIGINAL_SIGNED)


def test_original_autoaugment_applies_what_it_draws(monkeypatch):
    aug, calls = OriginalAutoAugment("cifar10"), []
    monkeypatch.setattr(aa, "original_op", lambda img, name, b, s: calls.append((name, b, s)) or img)
    img = to_pil(random_images(1, 3, 4, 4)[0])
    torch.manual_seed(1)
    for _ in range(200):
        aug(img)
    torch.manual_seed(1)
    expected = []
    for _ in range(200):
        d = aug.draw()
        sub = aug.sub_policies[d["sub_policy"]]
        expected += [(name, b, s) for (name, _, b), on, s in zip(sub, d["applied"], d["sign"]) if on]
    assert calls == expected and len(calls) > 100


def test_original_autoaugment_is_reproducible_from_the_global_rng():
    aug, img = OriginalAutoAugment("svhn"), to_pil(random_images(1, 3, 32, 32, seed=3)[0])
    torch.manual_seed(5)
    a = [from_pil(aug(img)) for _ in range(20)]
    torch.manual_seed(5)
    assert all(t.equal(from_pil(aug(img))) for t in a)


@pytest.mark.parametrize("ops", ["original", "torchvision"])
@pytest.mark.parametrize("policy", ["cifar10", "svhn"])
def test_batched_autoaugment_draw_frequencies(policy, ops):
    aug = BatchAutoAugment(policy, ops=ops)
    p = aug.draw(20000, "cpu", gen(4))
    subs = aa._policy_table(policy)
    for s, sp in enumerate(subs):
        rows = p["sub_policy"] == s
        for k, (name, _, b) in enumerate(sp):
            assert (p["op"][rows, k] == OP_INDEX[name]).all() and (p["bin"][rows, k] == (b or 0)).all()
    signed = policy_kernels.ORIGINAL_SIGNED if ops == "original" else {n for n, (_, sg) in _aa_space((32, 32)).items() if sg}
    neg, is_signed = check_autoaugment_draws(subs, p["sub_policy"], p["applied"], p["sign"], signed)
    assert not neg[~is_signed].any()
    rotate = p["op"] == OP_INDEX["Rotate"]
    if ops == "original":
        assert rotate.any() and (p["sign"][rotate] == 1).all()  # the original never turns clockwise
    else:
        assert within(int((p["sign"][rotate] < 0).sum()), int(rotate.sum()), 0.5)


def test_randaugment_and_trivialaugment_draw_frequencies():
    ra, n = BatchRandAugment(2, 9), 10000
    p = ra.draw(n, "cpu", gen(5))
    assert p["applied"].all() and (p["bin"] == 9).all()
    counts = torch.bincount(p["op"].flatten(), minlength=len(OPS))
    assert len(ra.op_names) == 14 and all(within(int(counts[OP_INDEX[o]]), 2 * n, 1 / 14) for o in ra.op_names)
    assert counts[OP_INDEX["Invert"]] == 0
    ta = BatchTrivialAugmentWide()
    p = ta.draw(20000, "cpu", gen(6))
    counts = torch.bincount(p["op"].flatten(), minlength=len(OPS))
    assert all(within(int(counts[OP_INDEX[o]]), 20000, 1 / 14) for o in ta.op_names)
    assert all(within(int(c), 20000, 1 / 31) for c in torch.bincount(p["bin"].flatten(), minlength=31))
    for policy, p in ((ra, ra.draw(n, "cpu", gen(7))), (ta, p)):
        space = T.TrivialAugmentWide()._augmentation_space(31)
        for name in policy.op_names:
            sel = p["op"] == OP_INDEX[name]
            neg = int((p["sign"][sel] < 0).sum())
            assert within(neg, int(sel.sum()), 0.5) if space[name][1] else neg == 0, name
