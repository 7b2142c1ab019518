"""models/__init__.py: the one registry. Names, options that arrive or are refused in one line, the image
sizes each model takes (tried on the real networks), the model table, and import order.

The per-family maths and parameter counts are in test_vit.py, test_vit_zoo.py and test_cnn.py.
"""
import os
import re
import subprocess
import sys

import pytest
from conftest import model_params
import torch
import torch.nn as nn
from torchvision.ops import SqueezeExcitation

import models
import vit
from models import MODELS, build_model
from utils import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNETS = [f"{p}resnet{d}" for p in ("", "preact_") for d in (18, 34, 50, 101, 152)]
# Over 80M parameters: seconds just to build on a small CPU.


pytestmark = pytest.mark.usefixtures("one_thread_module")


# --------------------------------------------------------------------------- names


def test_registry_names_and_unknown_name():
    names = MODELS.names()
    assert names == sorted(names) == models.model_names()
    assert {"vit", "vit_small", "resnet18", "cait", "k47_vit_small", "k47_cait", "k47_convmixer"} <= set(names)
    assert "vit" in MODELS and "nope" not in MODELS and len(MODELS) == len(names)
    with pytest.raises(UserError) as e:
        build_model("nope", 10, 32, 3)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("unknown model 'nope'; choose from: ") and "k47_vit" in msg


def test_registering_twice_or_with_kwargs_is_an_error():
    before = MODELS.names()
    with pytest.raises(ValueError, match="registered twice"):
        models.register_model("vit", about="again")(vit.build_vit)

    def sloppy(num_classes, image_size=32, in_chans=3, **kwargs):
        return nn.Identity()

    with pytest.raises(TypeError, match="kwargs"):
        models.register_model("sloppy", about="drops options")(sloppy)
    with pytest.raises(TypeError, match="no keyword"):
        models.register_model("badbind", preset_typo="vit", about="x")(vit.build_vit)
    assert MODELS.names() == before


def test_every_model_says_what_it_is():
    for name in MODELS.names():
        about = MODELS.get(name).about
        assert about and "\n" not in about and "|" not in about, name
    # one name, one network: where our name is one of kentaroy47's --net names for another network,
    # both rows say so
    for ours in ("vit", "vit_small", "vit_tiny", "cait", "convmixer"):
        assert f"see k47_{ours}" in MODELS.get(ours).about
        assert f"not our {ours}" in MODELS.get(f"k47_{ours}").about or \
            f"not our DeiT-size {ours}" in MODELS.get(f"k47_{ours}").about
    assert "DeiT" in MODELS.get("vit_small").about and "DeiT" in MODELS.get("vit_tiny").about


# --------------------------------------------------------------------------- options


VIT_OPTIONS = {"dropout", "drop_path", "patch_size", "num_layers", "hidden", "mlp_hidden", "head", "cls_token",
               "maths"}


def test_accepted_options_per_family():
    for name in vit.PRESETS:
        assert models.accepted_options(name) == VIT_OPTIONS
    for name in RESNETS:
        assert models.accepted_options(name) == {"dropout", "drop_path", "bottleneck", "zero_init_residual", "se"}
    assert models.accepted_options("pyramidnet110") == {"dropout", "shakedrop"}
    assert models.accepted_options("vgg16") == models.accepted_options("cnn") == {"dropout"}
    assert models.accepted_options("k47_vit") == {"dropout", "emb_dropout", "drop_path", "patch_size", "dim",
                                                  "depth", "heads", "dim_head", "mlp_dim"}
    # every model has a dropout; drop_path only where there are residual branches to drop
    assert all("dropout" in models.accepted_options(n) for n in MODELS.names())
    assert {n for n in MODELS.names() if "drop_path" not in models.accepted_options(n)} == {
        "cnn", "vgg16", "vgg19", "pyramidnet110", "pyramidnet272"}


def test_drop_path_and_dropout_arrive_in_the_vit():
    model = build_model("vit", 10, 32, 3, drop_path=0.1, dropout=0.2)
    rates = [m.p for m in model.modules() if isinstance(m, vit.DropPath)]
    assert len(rates) == 7 and rates[0] == 0.0 and rates == sorted(rates) and rates[-1] == pytest.approx(0.1)
    assert rates == pytest.approx([0.1 * i / 6 for i in range(7)])
    drops = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 7 * 3 and set(drops) == {0.2}  # attention output, and twice in each MLP


def test_vit_options_arrive():
    model = build_model("vit_small", 10, 64, 3, patch_size=8, num_layers=3, hidden=96, mlp_hidden=80, head=4,
                        cls_token=False, maths="standard")
    assert model.patch_size == 8 and len(model.blocks) == 3 and model.cls_token is None
    blk = model.blocks[0]
    assert blk.attn.qkv.in_features == 96 and blk.attn.head == 4 and blk.mlp[0].out_features == 80
    assert blk.attn.scale is None and not isinstance(blk.mlp[-2], nn.GELU)  # the standard maths
    # the default is ViT-CIFAR's maths
    assert build_model("vit", 10, 32, 3).blocks[0].attn.scale == pytest.approx(384 ** -0.5)


def test_resnet_options_arrive():
    model = build_model("resnet18", 10, 32, 3, se=True, zero_init_residual=True, drop_path=0.2)
    assert sum(isinstance(m, SqueezeExcitation) for m in model.modules()) == 8
    assert all((b.bn2.weight == 0).all() for b in model.modules() if hasattr(b, "bn2") and hasattr(b, "se"))
    assert max(m.p for m in model.modules() if type(m).__name__ == "StochasticDepth") == pytest.approx(0.2)
    ps = [m.p_drop for m in build_model("pyramidnet110", 10, 32, 3, shakedrop=0.3).modules() if hasattr(m, "p_drop")]
    assert ps[-1] == pytest.approx(0.3)


def test_zoo_options_arrive():
    cait = build_model("k47_cait", 10, 32, 3, depth=1, cls_depth=1)
    assert {m.p for m in cait.modules() if isinstance(m, vit.DropPath)} == {0.05}  # its default
    cait = build_model("k47_cait", 10, 32, 3, depth=1, cls_depth=1, drop_path=0.2, emb_dropout=0.3)
    assert {m.p for m in cait.modules() if isinstance(m, vit.DropPath)} == {0.2} and cait.pos_drop.p == 0.3
    swin = build_model("swin_t", 10, 32, 3, depths=(2, 2, 2, 2), attn_dropout=0.1)
    assert {m.attention_dropout for m in swin.modules() if hasattr(m, "attention_dropout")} == {0.1}


def test_a_foreign_option_is_refused_in_one_line():
    with pytest.raises(UserError) as e:
        build_model("vit", 10, 32, 3, se=True)
    msg = str(e.value)
    assert msg == f"--se is not an option of vit; models that take it: {', '.join(RESNETS_SORTED)}"
    with pytest.raises(UserError, match=r"^--drop-path is not an option of vgg16; models that take it: .*vit, "):
        build_model("vgg16", 10, 32, 3, drop_path=0.1)
    with pytest.raises(UserError, match=r"^--vit-maths is not an option of resnet18; models that take it: vit, "
                                        r"vit_base, vit_small, vit_tiny$"):
        build_model("resnet18", 10, 32, 3, maths="original")
    with pytest.raises(UserError, match=r"^--no-such is not an option of cnn; no model takes it$"):
        build_model("cnn", 10, 32, 3, no_such=1)
    with pytest.raises(UserError) as e:  # two at once: still one line
        build_model("cnn", 10, 32, 3, se=True, shakedrop=0.1)
    assert "\n" not in str(e.value) and "--se" in str(e.value) and "--shakedrop" in str(e.value)


RESNETS_SORTED = sorted(RESNETS)


def test_none_means_not_set():
    """What main.py passes for a flag the user did not set: the model's own default."""
    everything = dict(dropout=None, drop_path=None, patch_size=None, num_layers=None, hidden=None, mlp_hidden=None,
                      head=None, cls_token=None, maths=None, shakedrop=None, zero_init_residual=None, se=None)
    for name in ("vit", "resnet18", "cnn", "k47_vit_tiny"):
        torch.manual_seed(0)
        a = build_model(name, 10, 32, 3, **everything)
        torch.manual_seed(0)
        b = build_model(name, 10, 32, 3)
        assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    model = build_model("k47_vit", 10, 32, 3, dropout=None)
    assert {m.p for m in model.blocks.modules() if isinstance(m, nn.Dropout)} == {0.1}  # its default, not 0


# --------------------------------------------------------------------------- image sizes


def good_and_bad_size(name):
    """The smallest size the model takes, and one it does not (0 when it takes every size >= 1)."""
    spec = MODELS.get(name)
    m, lo = spec.sizes.resolve(spec.defaults)
    good = -(-lo // m) * m
    bad = good + 1 if m > 1 else lo - 1
    return good, bad


@pytest.mark.parametrize("name", model_params(models.model_names()))
def test_image_sizes_are_the_networks_own(name):
    """The smallest declared size builds and runs; the bad one is refused in one line, and (above 0)
    really breaks the network when built without the check."""
    good, bad = good_and_bad_size(name)
    models.check_image_size(name, good)
    model = build_model(name, 10, good, 3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, good, good)).shape == (1, 10)
    with pytest.raises(UserError) as e:
        models.check_image_size(name, bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{name} takes --image-size ") and msg.endswith(f"; got {bad}")
    with pytest.raises(UserError):
        build_model(name, 10, bad, 3)
    if bad > 0:
        with pytest.raises(Exception):  # ValueError from the builder, or the network's own shape error
            raw = MODELS.get(name)(10, bad, 3).eval()
            with torch.no_grad():
                raw(torch.randn(1, 3, bad, bad))


def test_image_size_messages():
    with pytest.raises(UserError, match=r"^mobilevit_xxs takes --image-size multiples of 32 \(32, 64, \.\.\.\); "
                                        r"got 20$"):
        models.check_image_size("mobilevit_xxs", 20)
    with pytest.raises(UserError, match=r"^vgg16 takes --image-size 32 or more; got 20$"):
        models.check_image_size("vgg16", 20)
    with pytest.raises(UserError, match=r"^vit takes --image-size multiples of 8 \(8, 16, \.\.\.\) at --patch-size 8; "
                                        r"got 36$"):
        build_model("vit", 10, 36, 3, patch_size=8)
    models.check_image_size("vit", 36)  # 4x4 patches by default
    models.check_image_size("swin_t", 48)
    with pytest.raises(UserError, match="multiples of 16"):
        models.check_image_size("swin_t", 40)
    with pytest.raises(UserError, match="multiples of 8"):  # the stride follows the options
        models.check_image_size("swin_t", 36, depths=(2, 2, 2))
    assert models.ImageSizes(multiple=4, minimum=8).describe({}) == "multiples of 4 from 8 (8, 12, ...)"


# --------------------------------------------------------------------------- table and imports


def test_model_table_rows():
    # A few small models (every model's build and count is tested in test_cnn / test_vit_zoo);
    # README's table must still name every registered model.
    table = models.model_table(names=["vit_small", "resnet18", "cait"]).splitlines()
    assert len(table) == 2 + 3 and table[0].startswith("| name |")
    row = next(r for r in table if r.startswith("| `vit_small` |"))
    assert "DeiT" in row and "k47_vit_small" in row and re.search(r"\| \d+\.\d\dM \| \d+\.\d{3} \|$", row)
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert [n for n in MODELS.names() if f"| `{n}` |" not in readme] == []


@pytest.mark.parametrize("code", [
    # importing the registry imports no model code; reading it does
    pytest.param("import sys, models; assert 'vit' not in sys.modules and not [m for m in sys.modules if m.startswith('models.')]; "
                 "from models import build_model; build_model('k47_vit_tiny', 10, 8, 3, depth=1); print(len(models.MODELS))",
                 marks=pytest.mark.slow),
    # a family module first (models.k47 imports models.vit_variants, models.layers and vit, all import
    # models): no cycle, nothing registered twice
    pytest.param("import sys; from models import k47; import models; assert 'models.resnet' not in sys.modules; "
                 "print(len(models.model_names()))", marks=pytest.mark.slow),
], ids=["registry-first", "family-first"])
def test_imports_in_any_order(code):
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) == len(MODELS.names())


def test_attn_dropout_flag_arrives_and_is_refused_where_the_model_has_none():
    """--attn-dropout reaches the attention of the models that take it (the CCT family's recipes
    set 0.1), and is a one-line error on a model without it."""
    import build
    import main as cli
    args = cli.get_args_parser().parse_args(["--model-name", "cct_7_3x1", "--attn-dropout", "0.1"])
    options = build.model_options(args)
    assert options == {"attn_dropout": 0.1}
    model = build_model("cct_7_3x1", 10, 32, 3, **options)
    assert {m.attn_dropout for m in model.modules() if hasattr(m, "attn_dropout")} == {0.1}
    with pytest.raises(UserError, match=r"^--attn-dropout is not an option of vit; models that take it: .*cct_7_3x1"):
        build_model("vit", 10, 32, 3, attn_dropout=0.1)
