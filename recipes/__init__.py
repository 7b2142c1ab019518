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

  recipes/vit_cifar.py              omihub777/ViT-CIFAR (the default)
  recipes/compact_transformers.py   SHI-Labs/Compact-Transformers (CCT, ViT-Lite, CVT)
  recipes/spt_lsa.py                aanna0701/SPT_LSA_ViT
  recipes/kentaroy47.py             kentaroy47/vision-transformers-cifar10
  recipes/kuangliu.py               kuangliu/pytorch-cifar (ResNet-18)
"""
import copy
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from utils import LazyRegistry

# One module per source; importing each registers its recipes. They are imported the first time
# the table is read, so importing this package costs nothing and has no import cycle.
SOURCES = ("recipes.vit_cifar", "recipes.compact_transformers", "recipes.spt_lsa", "recipes.kentaroy47",
           "recipes.kuangliu")
RECIPES = LazyRegistry("recipe", SOURCES)

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


def full_flags(**overrides):
    """_NEUTRAL with `overrides` on top; the _REQUIRED numbers must be among them."""
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


def register(recipe):
    RECIPES.register(recipe.name, recipe)
    return recipe


def figure(accuracy, epochs, note=""):
    """One published figure: accuracy in %, at the source's epoch count."""
    return {"accuracy": float(accuracy), "epochs": int(epochs), "note": note}
