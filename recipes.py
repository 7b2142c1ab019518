"""Published recipes: every published figure this package points at is one command.

    python main.py --recipe cct_7_3x1 --dataset c100
    python main.py --list-recipes

Each `Recipe` (in the spirit of big_vision's config variants) names a model and a complete set
of main.py flag defaults (argparse dest names), with per-dataset overrides where the source
differs per dataset; the figure(s) the source published, per dataset, with their epochs; where
in the source every number was read (`source`); and an honest `differences` string: what this
package does differently from the source, and `missing`, the knobs the source sets that
main.py has no flag for. A flag given on the command line still wins over the recipe (main.py
applies `resolve()` as parser defaults).

`vit_cifar` is this package's own default (empty overrides): `--recipe vit_cifar` changes
nothing, and its published command adds `command_flags` (--label-smoothing --autoaugment).

Every figure here was published by its source, not measured by this package; see README's
Reproduce table (`reproduce_rows()`) and each recipe's `differences` before comparing.
"""
import copy
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from utils import Registry

RECIPES = Registry("recipe")

# Class counts of the datasets a recipe can name (the params column builds the model for them).
DATASET_CLASSES = {"c10": 10, "c100": 100, "svhn": 10}

# Every recipe other than vit_cifar starts from these, so that a recipe never silently inherits a
# main.py default that may change: augmentation and regularisation off, the plain schedule.
# Each recipe must then state its optimisation numbers (_REQUIRED) itself.
_NEUTRAL = dict(
    scheduler="cosine", lr_per_step=False, momentum=0.9, nesterov=False, beta1=0.9, beta2=0.999,
    wd_exclude_norm_bias=False, criterion="ce", label_smoothing=False, smoothing=0.1,
    autoaugment=False, aa_ops="original", randaugment=False, ra_n=2, ra_m=9, trivialaugment=False,
    crop_padding=4, mixup=False, mixup_alpha=1.0, cutmix=False, cutmix_beta=1.0, mix_prob=None,
    mix_choice="original", random_erasing=0.0, cutout=0, rcpaste=False, grad_clip=0.0, ema_decay=0.0, sam=False,
)
# dropout / drop_path reach the model's builder, which refuses an option it does not take, so they
# are not neutral: each recipe states the source's values (None in main.py: the model's default).
_REQUIRED = ("optimizer", "lr", "min_lr", "weight_decay", "warmup_epoch", "batch_size", "max_epochs",
             "dropout", "drop_path")


def _flags(**overrides):
    missing = [k for k in _REQUIRED if k not in overrides]
    if missing:
        raise TypeError(f"a recipe must state {', '.join(missing)}")
    return {**_NEUTRAL, **overrides}


@dataclass(frozen=True)
class Recipe:
    """One published recipe. Mappings are read-only; `resolve()` hands out fresh copies."""

    name: str
    model_name: str
    flags: dict
    source: str
    differences: str
    published: dict                      # dataset -> {"accuracy": %, "epochs": int, "note": str}
    per_dataset: dict = field(default_factory=dict)   # dataset -> flag overrides
    command_flags: dict = field(default_factory=dict)  # extra flags of the published command
    missing: tuple = ()                  # "knob=value (why)" that main.py has no flag for

    def __post_init__(self):
        # Frozen all the way down: a caller that edits what it got must not edit the table.
        for name in ("flags", "per_dataset", "published", "command_flags"):
            value = getattr(self, name)
            if name in ("per_dataset", "published"):
                value = {k: MappingProxyType(dict(v)) for k, v in value.items()}
            object.__setattr__(self, name, MappingProxyType(dict(value)))
        object.__setattr__(self, "missing", tuple(self.missing))

    @property
    def model_missing(self):
        """True while `model_name` is not a registered model (asked of the registry, so it can
        never go stale when the model is added)."""
        from models import MODELS
        return self.model_name not in MODELS


def resolve(name, dataset):
    """The flag defaults of recipe `name` on `dataset` ('c10' | 'c100' | 'svhn' | any other:
    no per-dataset overrides): model_name, then the flags, then per_dataset[dataset] on top.
    An unknown name is a one-line utils.UserError listing the names."""
    recipe = RECIPES.get(name)
    resolved = {"model_name": recipe.model_name, **recipe.flags, **recipe.per_dataset.get(dataset, {})}
    return copy.deepcopy(resolved)  # lists (milestones) must not alias the table


def _option(dest, value):
    option = "--" + dest.replace("_", "-")
    return option if value is True else f"{option} {value}"


def command(name, dataset):
    """The published row's full command line."""
    recipe = RECIPES.get(name)
    parts = ["python main.py", f"--recipe {name}", f"--dataset {dataset}"]
    parts += [_option(k, v) for k, v in recipe.command_flags.items()]
    return " ".join(parts)


def reproduce_rows():
    """README's Reproduce table: one dict per (recipe, published dataset)."""
    rows = []
    for name in RECIPES.names():
        recipe = RECIPES.get(name)
        for dataset, fig in recipe.published.items():
            rows.append({"recipe": name, "dataset": dataset, "model": recipe.model_name,
                         "command": command(name, dataset), "accuracy": fig["accuracy"],
                         "epochs": fig["epochs"], "note": fig["note"], "source": recipe.source})
    return rows


@lru_cache(maxsize=None)
def _param_count(model_name, num_classes):
    import torch

    from models import build_model
    with torch.random.fork_rng(devices=[]):  # listing recipes must not move the caller's RNG
        model = build_model(model_name, num_classes, 32, 3)
    return sum(p.numel() for p in model.parameters())


def table(defaults=None):
    """The --list-recipes text: one row per (recipe, dataset with a published figure).

    `epochs` is what the recipe's command trains (a flag the recipe leaves to main.py is read
    from `defaults`, main.py's parser defaults, when given); `published` is the source's figure
    at the source's epoch count (they differ where the source counts epochs differently).
    """
    defaults = defaults or {}
    head = ("recipe", "dataset", "model", "params", "epochs", "published", "source")
    rows = []
    for r in reproduce_rows():
        recipe = RECIPES.get(r["recipe"])
        flags = resolve(r["recipe"], r["dataset"])
        epochs = flags.get("max_epochs", defaults.get("max_epochs", r["epochs"]))
        params = "-" if recipe.model_missing else \
            f"{_param_count(recipe.model_name, DATASET_CLASSES.get(r['dataset'], 10)) / 1e6:.2f}M"
        rows.append((r["recipe"], r["dataset"], recipe.model_name, params, str(epochs),
                     f"{r['accuracy']:.2f}% @{r['epochs']}ep", recipe.source))
    widths = [max(len(row[i]) for row in [head] + rows) for i in range(len(head) - 1)]
    lines = []
    for row in [head] + rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return "\n".join(lines)


def _register(recipe):
    RECIPES.register(recipe.name, recipe)


def _fig(accuracy, epochs, note=""):
    return {"accuracy": float(accuracy), "epochs": int(epochs), "note": note}


# ----------------------------------------------------------------------------- omihub777/ViT-CIFAR

_register(Recipe(
    name="vit_cifar",
    model_name="vit",
    flags={},  # this package's defaults are ViT-CIFAR's: the recipe changes nothing
    command_flags={"label_smoothing": True, "autoaugment": True},
    published={
        "c10": _fig(90.92, 200, "README '2. Results' (V100, mixed precision); an earlier README "
                                "revision listed 91.01"),
        "c100": _fig(66.54, 200, "README '2. Results'"),
        "svhn": _fig(97.31, 200, "README '2. Results'"),
    },
    source="omihub777/ViT-CIFAR README.md: '2. Results' (figures), '3. Hyperparams', command in '1. Quick Start'",
    differences=(
        "None in the flags: main.py's defaults are the original's (Adam 1e-3 -> 1e-5 cosine, wd 5e-5, "
        "5 warm-up epochs, batch 128, 200 epochs, ViT 7 layers x 384, 12 heads, MLP 384, 8x8 grid of 4-pixel "
        "patches). "
        "The published command adds --label-smoothing --autoaugment (command_flags), so "
        "`--recipe vit_cifar` alone changes nothing; the README shows it for CIFAR-10, and CIFAR-100 / SVHN "
        "are taken to be the same command on their dataset. Figures are the original's; not measured here."),
))


# ----------------------------------------------------------------------------- SHI-Labs/Compact-Transformers

_CCT_ATTN = "attn_dropout=0.1 (CCT's default attention dropout; the model takes attn_dropout, main.py has no flag)"

_register(Recipe(
    name="cct_7_3x1",
    model_name="cct_7_3x1",
    flags=_flags(
        optimizer="adamw", lr=5.5e-4, min_lr=1e-5, weight_decay=0.06, wd_exclude_norm_bias=True,
        scheduler="cosine", warmup_epoch=10, lr_per_step=False, batch_size=128, max_epochs=300,
        criterion="torch_ls", label_smoothing=True, smoothing=0.1,
        # timm 'rand-m9-mstd0.5-inc1': m9 of timm's 0-10 scale = 0.9 of the maximum = bin 27 of
        # torchvision's 0-30 scale (same shear/rotate/translate/enhance amounts).
        randaugment=True, ra_n=2, ra_m=27,
        mixup=True, mixup_alpha=0.8, cutmix=True, cutmix_beta=1.0, mix_prob=1.0, mix_choice="random",
        random_erasing=0.0, drop_path=0.1, dropout=0.0, crop_padding=4,
    ),
    per_dataset={"c100": {"lr": 6e-4, "random_erasing": 0.25}},
    published={
        "c10": _fig(96.53, 300, "README 'CIFAR-10 and CIFAR-100' (learnable PE, no pretraining); "
                                "config configs/pretrained/cct_7-3x1_cifar10_300epochs.yml"),
        "c100": _fig(80.92, 300, "README 'CIFAR-10 and CIFAR-100'; config "
                                 "configs/pretrained/cct_7-3x1_cifar100_300epochs.yml"),
    },
    source=("SHI-Labs/Compact-Transformers: configs/pretrained/cct_7-3x1_cifar{10,100}_300epochs.yml "
            "(timm train.py), README results table, model defaults in src/cct.py"),
    missing=(
        "ra_mstd=0.5 (timm RandAugment magnitude noise)",
        "ra_op_prob=0.5 (timm applies each drawn RandAugment op with probability 0.5)",
        _CCT_ATTN,
        "mixup_off_epoch=175 (c10 only: timm stops mixing from epoch 175)",
        "cooldown_epochs=10 (timm trains 10 more epochs at min_lr: 310 in all)",
        "warmup_lr=1e-5 (c10) / 1e-6 (c100) (where timm's warm-up starts)",
        "random-resized crop scale (0.8, 1.0), ratio (3/4, 4/3), random interpolation (timm's train crop)",
    ),
    differences=(
        "Schedule: timm steps its cosine per epoch, as main.py's default does (no --lr-per-step), but warms "
        "up linearly from warmup_lr over 10 epochs with the cosine counted from epoch 0 over 300 epochs, "
        "then adds 10 cool-down epochs at min_lr (310 in all); here the warm-up starts at 0 in epoch 0 and "
        "there is no cool-down. RandAugment: --ra-m 27 is timm's m9 as the same fraction of the maximum, "
        "but torchvision applies every drawn op (timm: each with p 0.5), draws from another op set (no "
        "Invert/SolarizeAdd; Identity), has no magnitude noise (mstd 0.5), and its posterize at bin 27 "
        "keeps 4 bits where timm's increasing posterize keeps 1. timm crops with RandomResizedCrop(scale "
        "0.8-1); here pad-4 random crop, both with flips. Mixup 0.8 / CutMix 1.0 with switch prob 0.5 "
        "and prob 1 is --mix-choice random --mix-prob 1; on CIFAR-10 timm stops mixing at epoch 175, here "
        "it never stops. Weight decay: timm exempts 1-D parameters; --wd-exclude-norm-bias also exempts "
        "the position embedding, which timm decays. Stochastic depth 0.1 is --drop-path 0.1; CCT's "
        "attention dropout 0.1 has no flag. Label smoothing 0.1 is timm's form (--criterion torch_ls). "
        "Random erasing on CIFAR-100: 0.25 per the stored config at commit 87e9459; another stored "
        "version (3e02036) says 0. Figures are the source's, not measured here."),
))

_register(Recipe(
    name="cct_7_3x1_aa",
    model_name="cct_7_3x1",
    flags=_flags(
        optimizer="adamw", lr=5e-4, min_lr=0.0, weight_decay=0.03, wd_exclude_norm_bias=False,
        scheduler="cosine", warmup_epoch=10, lr_per_step=False, batch_size=64, max_epochs=200,
        criterion="torch_ls", label_smoothing=True, smoothing=0.1,
        autoaugment=True, aa_ops="original", crop_padding=4, drop_path=0.1, dropout=0.0,
    ),
    per_dataset={"c100": {"batch_size": 128}},  # the maintainer's CIFAR-100 command (issue #21)
    published={
        "c10": _fig(94.78, 200, "examples/README.md table (old training script)"),
        "c100": _fig(77.05, 200, "examples/README.md table (old training script)"),
    },
    source=("SHI-Labs/Compact-Transformers examples/main.py (the old script; defaults lr 5e-4, wd 3e-2, "
            "AutoAugment, label smoothing) + examples/README.md (table; CCT-7/3x1 command --warmup 10 "
            "--batch-size 64); issue #21 (CIFAR-100: --warmup 10 --batch-size 128)"),
    missing=(_CCT_ATTN,),
    differences=(
        "The source warms up as lr/(W-e) in epoch e (lr/10, lr/9, ..., lr) and then decays with a cosine to "
        "0 over the remaining 190 epochs; here the warm-up is linear from 0 in epoch 0 and the cosine "
        "runs after it over 200 epochs, both stepped per epoch. AutoAugment: CCT's utils/autoaug.py is a "
        "modified DeepVoltaire CIFAR10Policy; --aa-ops original is ViT-CIFAR's copy of DeepVoltaire's. "
        "examples/main.py crops (pad 4) and flips; the mid-2021 root main.py did not crop. CIFAR-10 uses the "
        "README's command for CCT-6/3x1 and 7/3x1 (batch 64); CIFAR-100 the maintainer's command in issue "
        "#21 (batch 128). Weight decay on all parameters (AdamW over model.parameters()). CCT's attention "
        "dropout 0.1 has no flag. The maintainers say the paper's Table 1 figures are the best of 4 runs "
        "(issue #3); the script reports the best epoch. Figures are the source's, not measured here."),
))

_OLD_SCRIPT = dict(
    optimizer="adamw", lr=5e-4, min_lr=0.0, weight_decay=0.03, scheduler="cosine", warmup_epoch=5,
    lr_per_step=False, batch_size=128, max_epochs=200, criterion="torch_ls", label_smoothing=True,
    smoothing=0.1, autoaugment=True, aa_ops="original", crop_padding=4, drop_path=0.1, dropout=0.0,
)

_OLD_SCRIPT_DIFFERENCES = (
    "Model not registered here yet: {what}. The README gives no command for it, so these are "
    "examples/main.py's defaults (AdamW 5e-4, wd 3e-2, batch 128, 5 warm-up epochs, 200 epochs, "
    "AutoAugment, label smoothing 0.1, pad-4 crop + flip). The source warms up as lr/(W-e) and decays "
    "with a cosine to 0 after the warm-up; here linear warm-up from 0 and a cosine over 200 epochs. "
    "Attention dropout 0.1 (the model default) has no flag; stochastic depth 0.1 is --drop-path 0.1. "
    "Figures are the source's, not measured here.")

_register(Recipe(
    name="vit_lite_7_4",
    model_name="vit_lite_7_4",
    flags=_flags(**_OLD_SCRIPT),
    published={
        "c10": _fig(91.38, 200, "examples/README.md table (ViT-Lite 7/4, 3.717M)"),
        "c100": _fig(69.75, 200, "examples/README.md table (ViT-Lite 7/4)"),
    },
    source="SHI-Labs/Compact-Transformers examples/README.md table, examples/main.py defaults, src/vit.py (vit_7)",
    missing=(_CCT_ATTN.replace("CCT's", "ViT-Lite's"),),
    differences=_OLD_SCRIPT_DIFFERENCES.format(
        what="ViT-Lite-7/4 (src/vit.py: 4x4 patch conv, 7 layers, dim 256, 4 heads, MLP ratio 2, class "
             "token, learnable PE, attention dropout 0.1, stochastic depth 0.1; 3.717M parameters)"),
))

_register(Recipe(
    name="cvt_7_4",
    model_name="cvt_7_4",
    flags=_flags(**_OLD_SCRIPT),
    published={
        "c10": _fig(92.43, 200, "examples/README.md table (CVT 7/4, 3.717M)"),
        "c100": _fig(73.01, 200, "examples/README.md table (CVT 7/4)"),
    },
    source="SHI-Labs/Compact-Transformers examples/README.md table, examples/main.py defaults, src/cvt.py (cvt_7)",
    missing=(_CCT_ATTN.replace("CCT's", "CVT's"),),
    differences=_OLD_SCRIPT_DIFFERENCES.format(
        what="CVT-7/4 (src/cvt.py: ViT-Lite-7/4 with sequence pooling instead of the class token)"),
))


# ----------------------------------------------------------------------------- aanna0701/SPT_LSA_ViT

_register(Recipe(
    name="vit_spt_lsa",
    model_name="vit_spt_lsa",
    flags=_flags(
        optimizer="adamw", lr=1e-3, min_lr=5e-6, weight_decay=0.05, wd_exclude_norm_bias=False,
        # The source's 100 epochs are 300 passes (its RASampler: len_factor 3), per-step schedule.
        scheduler="cosine", lr_per_step=True, warmup_epoch=30, max_epochs=300, batch_size=128,
        repeated_aug=1,  # the source repeats no image within an epoch; see differences
        criterion="torch_ls", label_smoothing=True, smoothing=0.1,
        autoaugment=True, aa_ops="original", crop_padding=4,
        mixup=True, mixup_alpha=1.0, cutmix=True, cutmix_beta=1.0, mix_prob=0.5, mix_choice="random",
        random_erasing=0.25, drop_path=0.1, dropout=0.0,
    ),
    per_dataset={"svhn": {"hflip": True}},  # the source flips SVHN too
    published={
        "c10": _fig(94.53, 100, "README 'Small-Size Dataset Classification' (SL-ViT); 100 source epochs "
                                "= 300 passes over the data"),
        "c100": _fig(76.92, 100, "README (SL-ViT); 100 source epochs = 300 passes"),
        "svhn": _fig(97.79, 100, "README (SL-ViT); 100 source epochs = 300 passes"),
    },
    source=("aanna0701/SPT_LSA_ViT README.md (SL-ViT row; `python main.py --model vit --is_LSA --is_SPT`), "
            "main.py defaults, models/create_model.py; arXiv:2112.13492"),
    missing=(
        "random erasing area up to 0.4, aspect from 0.3, filled with the dataset mean (source's re_sh/re_r1)",
        "warmup_lr=5e-7 (inferred: where the warm-up starts)",
    ),
    differences=(
        "Epochs: the source's RASampler(len, batch, 1, args.ra=3) means repetitions 1 and len_factor 3 (the "
        "FixRes usage): each of its 100 'epochs' is three shuffled passes over the training set, one after "
        "another, so it is --max-epochs 300 --warmup-epoch 30 here with --repeated-aug 1 "
        "(this package's --repeated-aug N repeats each image N times in a row, which the source does not "
        "do). Its schedule is timm's cosine stepped per step (--lr-per-step); min_lr 5e-6 and the warm-up "
        "start 5e-7 are from utils/scheduler.py of the same authors' SPM_LMSA_ViT, and the sampler's "
        "signature from its utils/sampler.py (SPT_LSA_ViT stores both only as .pyc); here the warm-up starts "
        "at lr/steps. Label smoothing: its losses.py is not stored; its main.py derives from CCT's, whose loss is "
        "timm's form, hence --criterion torch_ls. Mixing: with prob 0.5 a batch gets CutMix or Mixup (0.5 each) "
        "= --mix-prob 0.5 --mix-choice random. Random erasing 0.25 is torchvision's area (0.02, 0.33) and "
        "N(0, 1) fill here. The source flips, crops, then applies AutoAugment (CIFAR10Policy; SVHNPolicy on "
        "SVHN) and flips SVHN too. Figures are the source's, not measured here."),
))


# ----------------------------------------------------------------------------- kentaroy47/vision-transformers-cifar10

_K47 = dict(
    optimizer="adam", lr=1e-4, min_lr=0.0, weight_decay=0.0, scheduler="cosine", warmup_epoch=0,
    lr_per_step=False, batch_size=512, criterion="ce", label_smoothing=False,
    randaugment=True, ra_n=2, ra_m=14, crop_padding=4,
    dropout=0.1, drop_path=0.0,  # k47_vit's dropout 0.1 (emb_dropout 0.1 is the model's default)
)
_K47_SOURCE = ("kentaroy47/vision-transformers-cifar10 README 'Results' (ViT patch=4 Epoch@200/500/1000), "
               "train_cifar10.py defaults (--net vit --patch 4 --bs 512 --lr 1e-4 --opt adam), randomaug.py")
_K47_MISSING = ("k47 RandAugment: its own op list (randomaug.py) at M=14/30, applied before the crop",)
_K47_DIFFERENCES = (
    "kentaroy47's RandAugment (randomaug.py, N=2, M=14 of 30) is its own op list (AutoContrast, Equalize, "
    "Invert, Rotate, Posterize, Solarize, SolarizeAdd, Color, Contrast, Brightness, Sharpness, ShearX/Y, "
    "CutoutAbs up to 40 px, TranslateX/Yabs up to 100 px) applied before the random crop; --randaugment "
    "is torchvision's at the same 14/30 (no Invert/SolarizeAdd/Cutout, relative translate, Identity). "
    "The source calls scheduler.step(epoch-1) after each epoch of CosineAnnealingLR(T_max=epochs), so "
    "its cosine lags this per-epoch cosine to 0 by two epochs. Adam without weight decay; fp16 with "
    "GradScaler; normalisation std (0.2023, 0.1994, 0.2010). The README figures are rounded to whole "
    "percent and are the best test accuracy of the run (the script checkpoints on it); only CIFAR-10 "
    "is published. The README gives only the epoch count for each row: the other settings are the "
    "script's defaults. Figures are the source's, not measured here.")

for _epochs, _acc, _suffix, _extra in ((200, 80, "", ""), (500, 85, "_500ep", "; an older README listed 88%"),
                                       (1000, 89, "_1000ep", "")):
    _register(Recipe(
        name="k47_vit_patch4" + _suffix,
        model_name="k47_vit",
        flags=_flags(**_K47, max_epochs=_epochs),
        published={"c10": _fig(_acc, _epochs, f"README 'ViT patch=4 Epoch@{_epochs}' (rounded){_extra}")},
        source=_K47_SOURCE,
        missing=_K47_MISSING,
        differences=_K47_DIFFERENCES,
    ))


# ----------------------------------------------------------------------------- kuangliu/pytorch-cifar

_KUANGLIU = dict(
    optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4, min_lr=0.0, warmup_epoch=0,
    lr_per_step=False, batch_size=128, criterion="ce", crop_padding=4, dropout=0.0, drop_path=0.0,
)

_register(Recipe(
    name="resnet18",
    model_name="resnet18",
    flags=_flags(**_KUANGLIU, scheduler="cosine", max_epochs=200),
    published={"c10": _fig(93.02, 200, "README 'Accuracy' (ResNet18); the figure predates the cosine "
                                       "script, see resnet18_step")},
    source=("kuangliu/pytorch-cifar README.md 'Accuracy' (ResNet18 93.02%), main.py (SGD 0.1, momentum "
            "0.9, wd 5e-4, batch 128, CosineAnnealingLR(T_max=200), 200 epochs, pad-4 crop + flip)"),
    differences=(
        "Same settings as the current main.py of the source (its per-epoch CosineAnnealingLR to 0 is this "
        "package's per-epoch cosine with no warm-up and --min-lr 0). But the README's 93.02% predates that "
        "script: it was already listed when the README described the manual 0.1/0.01/0.001 schedule over "
        "350 epochs (recipe resnet18_step). The figure is the best test accuracy of the run (the script "
        "checkpoints on it). This resnet18 has kuangliu's parameter count (11.17M). Figure is the "
        "source's, not measured here."),
))

_register(Recipe(
    name="resnet18_step",
    model_name="resnet18",
    flags=_flags(**_KUANGLIU, scheduler="multistep", milestones=[150, 250], gamma=0.1, max_epochs=350),
    published={"c10": _fig(93.02, 350, "README 'Accuracy' (ResNet18), with the README's 'Learning rate "
                                       "adjustment' of that time (0.1 / 0.01 / 0.001 at 0 / 150 / 250)")},
    source=("kuangliu/pytorch-cifar README.md at 0ed52b1 ('Accuracy' ResNet18 93.02%; 'Learning rate "
            "adjustment': 0.1 for [0,150), 0.01 for [150,250), 0.001 for [250,350)); main.py of that time "
            "(SGD momentum 0.9, wd 5e-4, batch 128, pad-4 crop + flip)"),
    differences=(
        "The source changed the learning rate by hand (`python main.py --resume --lr=0.01`), which built a "
        "new SGD optimizer, so its momentum buffers restart at epochs 150 and 250; --scheduler multistep "
        "keeps them. The figure is the best test accuracy of the run. Figure is the source's, not "
        "measured here."),
))

del _epochs, _acc, _suffix, _extra
