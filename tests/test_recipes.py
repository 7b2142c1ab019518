"""recipes/: each published row resolves to the numbers its source states, every flag is a
real main.py flag of the right type, the published commands parse, and the listing names every
recipe and source.

The expected numbers below are written out by hand from the sources (see each recipe's
`source`), not read back from the recipes package, so an edit to the table has to be an edit here too.
"""
import argparse
import shlex

import pytest

import build
import main
import recipes
from models import MODELS
from utils import UserError

# Models the table names before they are registered (issue: ViT-Lite / CVT of Compact-Transformers).
KNOWN_UNREGISTERED = set()  # every recipe's model is registered now


@pytest.fixture(scope="module")
def parser():
    return main.get_args_parser()


@pytest.fixture(scope="module")
def actions(parser):
    return {a.dest: a for a in parser._actions}


@pytest.fixture(scope="module")
def listing():
    return recipes.table()


def all_recipes():
    return [recipes.RECIPES.get(n) for n in recipes.RECIPES.names()]


def flag_sets(recipe):
    yield "flags", dict(recipe.flags)
    for dataset, overrides in recipe.per_dataset.items():
        yield f"per_dataset[{dataset}]", dict(overrides)
    yield "command_flags", dict(recipe.command_flags)


def check(resolved, **expected):
    wrong = {k: (resolved.get(k, "<unset>"), v) for k, v in expected.items() if resolved.get(k, "<unset>") != v}
    assert not wrong, f"(got, expected): {wrong}"


# ----------------------------------------------------------------------------- the table's form

def test_every_flag_is_a_parser_dest(actions):
    for recipe in all_recipes():
        for where, flags in flag_sets(recipe):
            unknown = set(flags) - set(actions)
            assert not unknown, f"{recipe.name} {where}: not main.py flags: {sorted(unknown)}"
        assert "model_name" in actions


def test_flag_values_have_the_parser_types(actions):
    # A recipe value goes in as a parser default, so argparse never converts it: the type must be right.
    for recipe in all_recipes():
        for where, flags in flag_sets(recipe):
            for key, value in flags.items():
                action = actions[key]
                what = f"{recipe.name} {where} {key}={value!r}"
                if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                    assert isinstance(value, bool), what
                elif value is None:
                    assert action.default is None, what
                elif action.nargs in ("+", "*"):
                    assert isinstance(value, list) and all(type(v) is action.type for v in value), what
                elif isinstance(action.nargs, int):
                    assert isinstance(value, list) and len(value) == action.nargs, what
                    assert all(type(v) is action.type for v in value), what
                elif action.type in (int, float):
                    assert type(value) is action.type, what
                else:
                    assert isinstance(value, str), what
                if action.choices is not None:
                    assert value in action.choices, what


def test_models_are_registered_unless_marked_missing():
    for recipe in all_recipes():
        if not recipe.model_missing:
            assert recipe.model_name in MODELS, recipe.name
        else:
            # A typo must not pass as "a model still to come".
            assert recipe.model_name in KNOWN_UNREGISTERED, recipe.name
    assert not any(r.model_missing for r in all_recipes())


def test_every_recipe_states_its_optimisation_numbers():
    for recipe in all_recipes():
        if recipe.name == "vit_cifar":
            continue
        for key in ("optimizer", "lr", "min_lr", "weight_decay", "warmup_epoch", "batch_size", "max_epochs",
                    "dropout", "drop_path"):
            assert key in recipe.flags, (recipe.name, key)
        assert recipe.source and recipe.differences and recipe.published
        assert all(isinstance(m, str) and m for m in recipe.missing)
        for dataset, fig in recipe.published.items():
            assert dataset in recipes.DATASET_CLASSES
            assert set(fig) == {"accuracy", "epochs", "note"}
            assert isinstance(fig["accuracy"], float) and 0 < fig["accuracy"] < 100
            assert isinstance(fig["epochs"], int) and fig["epochs"] > 0


def test_resolved_flags_pass_main_validation(parser):
    # What each published command trains is accepted by main.py's own checks (ranges, choices,
    # warm-up shorter than the run, ...).
    for row in recipes.reproduce_rows():
        recipe = recipes.RECIPES.get(row["recipe"])
        if recipe.model_missing:
            continue
        args = parser.parse_args(["--dataset", row["dataset"]])
        for key, value in recipes.resolve(row["recipe"], row["dataset"]).items():
            setattr(args, key, value)
        build.resolve_args(args)


def test_resolve_hands_out_copies_and_the_table_is_read_only():
    got = recipes.resolve("resnet18_step", "c10")
    got["milestones"].append(999)
    got["lr"] = 123.0
    again = recipes.resolve("resnet18_step", "c10")
    assert again["milestones"] == [150, 250] and again["lr"] == 0.1
    recipe = recipes.RECIPES.get("cct_7_3x1")
    with pytest.raises(TypeError):
        recipe.flags["lr"] = 1.0
    with pytest.raises(TypeError):
        recipe.per_dataset["c100"]["lr"] = 1.0
    with pytest.raises(AttributeError):
        recipe.lr = 1.0


def test_unknown_recipe_is_one_line_listing_the_names():
    with pytest.raises(UserError) as info:
        recipes.resolve("nope", "c10")
    message = str(info.value)
    assert "\n" not in message and "'nope'" in message
    for name in recipes.RECIPES.names():
        assert name in message


def test_listing_names_every_recipe_and_source(listing):
    for recipe in all_recipes():
        assert recipe.name in listing and recipe.source in listing
    rows = listing.splitlines()[1:]
    assert len(rows) == sum(len(r.published) for r in all_recipes())
    cct = [r for r in rows if r.startswith("cct_7_3x1 ") and " c10 " in r][0]
    assert "3.76M" in cct and "96.53% @300ep" in cct  # CCT-7/3x1's published 3.76M parameters
    lite = [r for r in rows if r.startswith("vit_lite_7_4 ")]
    if recipes.RECIPES.get("vit_lite_7_4").model_missing:
        assert all(r.split()[3] == "-" for r in lite)
    spt = [r for r in rows if r.startswith("vit_spt_lsa ") and " c10 " in r][0]
    assert spt.split()[4] == "300" and "94.53% @100ep" in spt  # our epochs vs the source's


def test_reproduce_rows_are_complete_commands(parser):
    rows = recipes.reproduce_rows()
    assert {(r["recipe"], r["dataset"]) for r in rows} == {
        (r.name, d) for r in all_recipes() for d in r.published}
    by_key = {(r["recipe"], r["dataset"]): r for r in rows}
    vit = by_key[("vit_cifar", "c10")]
    assert vit["command"] == "python main.py --recipe vit_cifar --dataset c10 --label-smoothing --autoaugment"
    assert vit["accuracy"] == 90.92 and vit["epochs"] == 200
    assert by_key[("cct_7_3x1", "c100")]["command"] == "python main.py --recipe cct_7_3x1 --dataset c100"
    has_recipe_flag = "recipe" in {a.dest for a in parser._actions}
    for row in rows:
        argv = shlex.split(row["command"])[2:]
        if not has_recipe_flag:  # until main.py has --recipe, parse the rest
            argv = argv[2:]
        args = parser.parse_args(argv)
        assert args.dataset == row["dataset"]


# ----------------------------------------------------------------------------- each row's numbers

def test_vit_cifar_is_the_package_default(parser):
    # omihub777/ViT-CIFAR README: 90.92 / 66.54 / 97.31 at 200 epochs, `--label-smoothing --autoaugment`.
    recipe = recipes.RECIPES.get("vit_cifar")
    for dataset in ("c10", "c100", "svhn"):
        assert recipes.resolve("vit_cifar", dataset) == {"model_name": parser.get_default("model_name")}
    assert dict(recipe.command_flags) == {"label_smoothing": True, "autoaugment": True}
    assert {d: (f["accuracy"], f["epochs"]) for d, f in recipe.published.items()} == {
        "c10": (90.92, 200), "c100": (66.54, 200), "svhn": (97.31, 200)}
    # The README's hyperparameters are main.py's defaults.
    for key, value in dict(optimizer="adam", lr=1e-3, min_lr=1e-5, weight_decay=5e-5, warmup_epoch=5,
                           batch_size=128, max_epochs=200, smoothing=0.1).items():
        assert parser.get_default(key) == value, key
    assert parser.get_default("dropout") in (None, 0.0) and MODELS.get("vit").defaults["dropout"] == 0.0


def test_cct_7_3x1_timm_300_epochs():
    # configs/pretrained/cct_7-3x1_cifar{10,100}_300epochs.yml
    common = dict(model_name="cct_7_3x1", optimizer="adamw", min_lr=1e-5, weight_decay=0.06,
                  wd_exclude_norm_bias=True, lr_per_step=False, batch_size=128, criterion="torch_ls",
                  label_smoothing=True, smoothing=0.1,
                  # timm's CosineLRScheduler: sched cosine, epochs 300, warmup_epochs 10, cooldown_epochs 10
                  scheduler="timm_cosine", warmup_epoch=10, max_epochs=310, cooldown_epochs=10,
                  policy="timm_randaugment", randaugment=False, autoaugment=False, ra_n=2, ra_m=9, ra_mstd=0.5,
                  ra_prob=0.5, ra_inc=1, mixup=True, mixup_alpha=0.8,
                  cutmix=True, cutmix_beta=1.0, mix_prob=1.0, mix_choice="random", drop_path=0.1, dropout=0.0,
                  attn_dropout=0.1)
    common.update(crop="timm_rrc", rrc_scale=[0.8, 1.0], rrc_ratio=[3 / 4, 4 / 3], rrc_interpolation="random")
    check(recipes.resolve("cct_7_3x1", "c10"), **common, lr=5.5e-4, warmup_lr=1e-5, mixup_off_epoch=175,
          random_erasing=0.0)
    check(recipes.resolve("cct_7_3x1", "c100"), **common, lr=6e-4, warmup_lr=1e-6, mixup_off_epoch=0,
          random_erasing=0.25)
    recipe = recipes.RECIPES.get("cct_7_3x1")
    assert {d: (f["accuracy"], f["epochs"]) for d, f in recipe.published.items()} == {
        "c10": (96.53, 300), "c100": (80.92, 300)}
    assert recipe.missing == ()  # every knob of the config has a flag now


def test_cct_7_3x1_autoaugment_200_epochs():
    # examples/main.py defaults + examples/README.md command (c10) + issue #21 (c100).
    common = dict(model_name="cct_7_3x1", optimizer="adamw", lr=5e-4, min_lr=0.0, weight_decay=0.03,
                  scheduler="cosine", warmup_epoch=10, max_epochs=200, criterion="torch_ls",
                  label_smoothing=True, smoothing=0.1, autoaugment=True, aa_ops="original", randaugment=False,
                  mixup=False, cutmix=False, random_erasing=0.0, crop_padding=4, drop_path=0.1, attn_dropout=0.1)
    check(recipes.resolve("cct_7_3x1_aa", "c10"), **common, batch_size=64)
    check(recipes.resolve("cct_7_3x1_aa", "c100"), **common, batch_size=128)
    recipe = recipes.RECIPES.get("cct_7_3x1_aa")
    assert {d: (f["accuracy"], f["epochs"]) for d, f in recipe.published.items()} == {
        "c10": (94.78, 200), "c100": (77.05, 200)}


@pytest.mark.parametrize("name, c10, c100", [("vit_lite_7_4", 91.38, 69.75), ("cvt_7_4", 92.43, 73.01)])
def test_vit_lite_and_cvt_old_script_defaults(name, c10, c100):
    for dataset in ("c10", "c100"):
        check(recipes.resolve(name, dataset), model_name=name, optimizer="adamw", lr=5e-4, min_lr=0.0,
              weight_decay=0.03, warmup_epoch=5, batch_size=128, max_epochs=200, criterion="torch_ls",
              label_smoothing=True, smoothing=0.1, autoaugment=True, drop_path=0.1, attn_dropout=0.1,
              mixup=False, cutmix=False)
    recipe = recipes.RECIPES.get(name)
    assert {d: (f["accuracy"], f["epochs"]) for d, f in recipe.published.items()} == {
        "c10": (c10, 200), "c100": (c100, 200)}


def test_vit_spt_lsa():
    # SPT_LSA_ViT main.py defaults; 100 source epochs x len_factor 3 = 300 passes, 10 x 3 warm-up.
    # min_lr 1e-5: CosineAnnealingWarmupRestarts, the schedule its per-step scheduler.step() can call.
    common = dict(model_name="vit_spt_lsa", optimizer="adamw", lr=1e-3, min_lr=1e-5, weight_decay=0.05,
                  scheduler="cosine", lr_per_step=True, warmup_epoch=30, max_epochs=300, batch_size=128,
                  repeated_aug=1, criterion="torch_ls", label_smoothing=True, smoothing=0.1, autoaugment=True,
                  mixup=True, mixup_alpha=1.0, cutmix=True, cutmix_beta=1.0, mix_prob=0.5, mix_choice="random",
                  random_erasing=0.25, erasing_style="zhong", drop_path=0.1, crop_padding=4)
    check(recipes.resolve("vit_spt_lsa", "c10"), **common)
    check(recipes.resolve("vit_spt_lsa", "c100"), **common)
    check(recipes.resolve("vit_spt_lsa", "svhn"), **common, hflip=True)
    assert "hflip" not in recipes.resolve("vit_spt_lsa", "c10")
    recipe = recipes.RECIPES.get("vit_spt_lsa")
    assert {d: (f["accuracy"], f["epochs"]) for d, f in recipe.published.items()} == {
        "c10": (94.53, 100), "c100": (76.92, 100), "svhn": (97.79, 100)}
    assert recipe.missing == ()


@pytest.mark.parametrize("name, epochs, accuracy", [("k47_vit_patch4", 200, 80.0),
                                                    ("k47_vit_patch4_500ep", 500, 85.0),
                                                    ("k47_vit_patch4_1000ep", 1000, 89.0)])
def test_k47_vit_patch4(name, epochs, accuracy):
    # train_cifar10.py defaults: Adam 1e-4 (no weight decay), batch 512, its RandAugment(2, 14), cosine.
    check(recipes.resolve(name, "c10"), model_name="k47_vit", optimizer="adam", lr=1e-4, weight_decay=0.0,
          min_lr=0.0, warmup_epoch=0, lr_per_step=False, scheduler="cosine", batch_size=512, max_epochs=epochs,
          policy="k47_randaugment", randaugment=False, ra_n=2, ra_m=14, label_smoothing=False, criterion="ce",
          dropout=0.1)
    assert recipes.RECIPES.get(name).missing == ()
    recipe = recipes.RECIPES.get(name)
    assert {d: (f["accuracy"], f["epochs"]) for d, f in recipe.published.items()} == {"c10": (accuracy, epochs)}
    # dropout 0.1 is the model's own default, so the recipe does not change the network.
    assert MODELS.get("k47_vit").defaults["dropout"] == 0.1


def test_resnet18_kuangliu():
    common = dict(model_name="resnet18", optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False,
                  weight_decay=5e-4, warmup_epoch=0, min_lr=0.0, batch_size=128, crop_padding=4,
                  criterion="ce", label_smoothing=False, autoaugment=False, randaugment=False, mixup=False)
    check(recipes.resolve("resnet18", "c10"), **common, scheduler="cosine", lr_per_step=False, max_epochs=200)
    check(recipes.resolve("resnet18_step", "c10"), **common, scheduler="multistep", milestones=[150, 250],
          gamma=0.1, max_epochs=350)
    for name, epochs in (("resnet18", 200), ("resnet18_step", 350)):
        recipe = recipes.RECIPES.get(name)
        assert {d: (f["accuracy"], f["epochs"]) for d, f in recipe.published.items()} == {"c10": (93.02, epochs)}


@pytest.mark.parametrize("name", ["cct_7_3x1", "cct_7_3x1_aa", "vit_lite_7_4", "cvt_7_4"])
def test_compact_transformers_dropout_rates_reach_the_model(name):
    # The source's models drop 10% of the attention weights and have stochastic depth rising to 0.1
    # in the last block: the recipe's flags must arrive in the modules.
    import flags
    from models.layers import Attention
    from vit import DropPath
    args = flags.parse_args(["--recipe", name, "--dataset", "c10"])
    args.num_classes = 10
    model = build.make_model(args, 3)
    assert {m.attn_dropout for m in model.modules() if isinstance(m, Attention)} == {0.1}
    assert max(m.p for m in model.modules() if isinstance(m, DropPath)) == pytest.approx(0.1)
