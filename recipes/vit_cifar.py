"""omihub777/ViT-CIFAR: the seed recipe, which is this package's default."""
from recipes import Recipe, figure, register

register(Recipe(
    name="vit_cifar",
    model_name="vit",
    flags={},  # this package's defaults are ViT-CIFAR's: the recipe changes nothing
    command_flags={"label_smoothing": True, "autoaugment": True},
    published={
        "c10": figure(90.92, 200, "README '2. Results' (V100, mixed precision); an earlier README "
                                "revision listed 91.01"),
        "c100": figure(66.54, 200, "README '2. Results'"),
        "svhn": figure(97.31, 200, "README '2. Results'"),
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
