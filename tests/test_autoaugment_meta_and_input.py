"""Tests for autoaugment.py's policies as batch ops: no syncs and a fixed op count on the meta device
(count_ops and its negative controls), tables moved once, input handling (bad inputs and arguments
refused, shape / dtype / device kept, the input untouched, independent and reproducible draws), and
torch.compile against eager (marked slow). CPU only."""
import pytest
import torch

from autoaugment import BatchAutoAugment, BatchRandAugment, BatchTrivialAugmentWide, OriginalAutoAugment, count_ops
from autoaugment_helpers import all_policies, random_images
from conftest import gen


# ---------------------------------------------------------------- 5. sync-free, fixed op count

@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_fixed_op_count_and_no_syncs_on_meta(policy, shape):
    small, large = count_ops(policy, 8, shape), count_ops(policy, 256, shape)
    assert small["by_op"] == large["by_op"] and small["ops"] == large["ops"] > 50
    for counts in (small, large):
        assert counts["syncs"] == 0 and counts["blocking_copies"] == 0
        assert not {"nonzero", "_local_scalar_dense", "_unique2", "masked_select"} & set(counts["by_op"])


class _Syncing:
    """Negative controls for count_ops: one policy reads a device value, one copies a host table."""

    def __init__(self, kind):
        self.kind = kind

    def to(self, device):
        return self

    def __call__(self, images):
        if self.kind == "sync":
            return images + int(images.sum())
        return images + torch.tensor([1, 2, 3], dtype=torch.uint8).to(images.device)[0]


def test_count_ops_detects_syncs_and_host_copies():
    assert count_ops(_Syncing("sync"), 4, device="cpu")["syncs"] == 1
    assert count_ops(_Syncing("copy"), 4)["blocking_copies"] == 1


def test_to_moves_tables_once_and_returns_self():
    policy = BatchAutoAugment("cifar10")
    assert policy.to("meta") is policy
    assert policy._op.device.type == "meta" and policy.kernel.static_lut.device.type == "meta"
    assert policy.kernel.geo[0]["rot_m"].device.type == "meta"


# ---------------------------------------------------------------- 6. input handling

@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_bad_input_rejected(policy):
    u8 = torch.uint8
    for bad in (torch.zeros(2, 3, 8, 8), torch.zeros(3, 8, 8, dtype=u8), torch.zeros(2, 2, 8, 8, dtype=u8)):
        with pytest.raises(ValueError):
            policy(bad)
    with pytest.raises(ValueError):
        policy.apply(torch.zeros(2, 3, 8, 8, dtype=torch.int16), policy.draw(2, "cpu"))


def test_bad_arguments_rejected():
    for make in (lambda: BatchAutoAugment("imagenet"), lambda: BatchAutoAugment(ops="pil"),
                 lambda: BatchRandAugment(magnitude=31), lambda: OriginalAutoAugment("nope")):
        with pytest.raises(ValueError):
            make()


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 40, 40), (3, 32, 32), (1, 17, 23)])
@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_shape_dtype_device_preserved_and_input_untouched(policy, shape):
    x = random_images(16, *shape, seed=12)
    before = x.clone()
    out = policy(x, gen(13))
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.device == x.device
    assert torch.equal(x, before) and not torch.equal(out, x)


@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_each_image_draws_independently(policy):
    x = random_images(1, 3, 32, 32, seed=7).expand(64, -1, -1, -1).contiguous()
    out = policy(x, gen(8))
    assert len({bytes(o.numpy()) for o in out}) >= 20


@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_reproducible_from_the_generator_or_the_global_rng(policy):
    x = random_images(32, 3, 32, 32, seed=9)
    torch.manual_seed(0)
    a = policy(x, gen(10))
    torch.manual_seed(1)  # an explicit generator makes the global RNG irrelevant
    assert torch.equal(a, policy(x, gen(10)))
    assert not torch.equal(a, policy(x, gen(11)))
    torch.manual_seed(2)
    b = policy(x)  # no generator: the device's global RNG, which the trainer reseeds
    torch.manual_seed(2)
    assert torch.equal(b, policy(x))


# ---------------------------------------------------------------- torch.compile

@pytest.mark.slow
@pytest.mark.parametrize("policy", [BatchAutoAugment("cifar10"), BatchAutoAugment("svhn"), BatchTrivialAugmentWide()],
                         ids=repr)
def test_compiled_apply_equals_eager(policy):
    x = random_images(16, 3, 32, 32, seed=14)
    compiled = torch.compile(lambda images, params: policy.apply(images, params), fullgraph=True)
    for seed in (15, 16):
        p = policy.draw(16, "cpu", gen(seed))
        assert torch.equal(compiled(x, p), policy.apply(x, p))
