"""The command line: every flag, its default and its help, in one parser.

main.py, bench.py and sweep.py parse with it; build.py turns the parsed flags into keyword
arguments for the objects below it, so nothing under build.py ever reads a flag. `--recipe`
sets the defaults of a published recipe (recipes/), and a flag given on the command line
still wins.
"""
import argparse
import os

import vit
from augment import POLICIES
from criterions import CRITERIONS
from data import DATASETS
from optim import OPTIMIZERS, SCHEDULERS

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + error
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where the help does not already say it, and never for switches
    (`--no-progress (default: True)` read as "bars off")."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default in (None, False, True) or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


# timm's RandomResizedCropAndInterpolation defaults; build.resolve_args refuses other values
# without --crop timm_rrc, comparing against this one table.
RRC_DEFAULTS = {"rrc_scale": (0.08, 1.0), "rrc_ratio": (3 / 4, 4 / 3), "rrc_interpolation": "random"}


def get_args_parser():
    p = _Parser(description="Train ViT-CIFAR and friends from scratch.",
                formatter_class=_HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="c10",
                   help=f"one of {', '.join(DATASETS.names())} (folder: an ImageFolder tree in --data-dir)")
    g.add_argument("--data-dir", default="./data", help="where datasets are found or downloaded")
    g.add_argument("--num-classes", type=int, default=None, help="default: the dataset's class count")
    g.add_argument("--image-size", type=int, default=32, help="images are resized to this side")
    g.add_argument("--train-subset", type=int, default=0, help="train on N images drawn with --seed (0: all)")
    g.add_argument("--val-split", type=int, default=0,
                   help="hold out N training images (seeded, stratified) for per-epoch validation; "
                        "the test set is then evaluated once, at the end")
    g.add_argument("--folds", type=int, default=0,
                   help="K-fold cross-validation: one run per fold in --output-dir/fold_I, a summary, "
                        "and the folds' ensemble on the test set")
    g.add_argument("--seeds", default=None, help="comma-separated seeds: one run each in --output-dir/seed_S, "
                                                 "and the mean +- std of the final metrics")
    g.add_argument("--input-path", default="auto", choices=["auto", "device", "workers"],
                   help="device: data and augmentation on the GPU; workers: PIL transforms in DataLoader "
                        "workers; auto: device on CUDA/MPS, workers on the CPU")
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers (workers path)")

    g = p.add_argument_group("model")
    g.add_argument("--model-name", default="vit", help="a registered model; see README's model table")
    g.add_argument("--patch", type=int, default=None, help="ViT: patches per image side (original flag; default 8 at 32x32)")
    g.add_argument("--patch-size", type=int, default=None, help="ViT: patch side in pixels (alternative to --patch)")
    g.add_argument("--head", type=int, default=None, help="ViT: attention heads (default: preset's; vit: 12)")
    g.add_argument("--num-layers", type=int, default=None, help="ViT: blocks (default: preset's; vit: 7)")
    g.add_argument("--hidden", type=int, default=None, help="ViT: width (default: preset's; vit: 384)")
    g.add_argument("--mlp-hidden", type=int, default=None, help="ViT: MLP width (default: preset's; vit: 384)")
    g.add_argument("--off-cls-token", action="store_true", help="ViT: average the tokens instead of a cls token")
    g.add_argument("--pretrained", default=None, metavar="PATH|hub",
                   help="for timm/<name> or tv/<name> backbones: weights from a local state dict, or 'hub' "
                        "(online); the head is replaced and images are resized to the backbone's input size")
    # Model options default to None, "not set": the model's own default applies, and a set
    # option that the model does not take is an error (models.build_model), never ignored.
    g.add_argument("--vit-maths", default=None, choices=vit.MATHS,
                   help="ViT presets (default original): original is ViT-CIFAR's attention scale 1/sqrt(hidden) "
                        "and GELU after the MLP; standard is 1/sqrt(head dim), no GELU after the MLP (README)")
    g.add_argument("--dropout", type=float, default=None,
                   help="dropout inside the model (the model's default, 0 for most; ViT: after attention and MLP "
                        "layers; CNNs: before the head)")
    g.add_argument("--drop-path", type=float, default=None, help="stochastic depth rate, where the model has it (default 0)")
    g.add_argument("--attn-dropout", type=float, default=None,
                   help="dropout on the attention weights, where the model has it (CCT, ViT-Lite, CVT, CaiT; default 0)")
    g.add_argument("--shakedrop", type=float, default=None, help="PyramidNet: final ShakeDrop probability (default 0.5)")
    g.add_argument("--zero-init-residual", action="store_true", default=None, help="ResNets: zero the last BN of each block")
    g.add_argument("--se", action="store_true", default=None, help="ResNets: squeeze-and-excitation blocks")

    g = p.add_argument_group("optimization")
    g.add_argument("--optimizer", default="adam", help=f"one of {', '.join(OPTIMIZERS.names())}")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    g.add_argument("--min-lr", type=float, default=1e-5, help="cosine's final learning rate")
    g.add_argument("--beta1", type=float, default=0.9, help="Adam/AdamW beta1")
    g.add_argument("--beta2", type=float, default=0.999, help="Adam/AdamW beta2")
    g.add_argument("--momentum", type=float, default=0.9, help="sgd, rmsprop, madgrad")
    g.add_argument("--nesterov", action="store_true", help="sgd: Nesterov momentum")
    g.add_argument("--weight-decay", type=float, default=5e-5, help="L2 penalty (adam), decoupled decay (adamw)")
    g.add_argument("--wd-exclude-norm-bias", action="store_true",
                   help="no weight decay on biases, norm weights and position embeddings")
    g.add_argument("--sam", action="store_true", help="wrap the optimizer in SAM")
    g.add_argument("--adaptive-sam", action="store_true", help="wrap the optimizer in adaptive SAM (ASAM)")
    g.add_argument("--sam-rho", type=float, default=0.05, help="SAM neighbourhood radius")
    g.add_argument("--scheduler", default="cosine", help=f"one of {', '.join(SCHEDULERS.names())}")
    g.add_argument("--warmup-epoch", type=int, default=5,
                   help="epochs of linear warm-up (as the original: lr * e / W in epoch e, epoch 0 at 0)")
    g.add_argument("--lr-per-step", action="store_true",
                   help="modern schedule: warm-up and cosine per optimizer step, ending at --min-lr on the last "
                        "step (default: the original's per-epoch GradualWarmup + CosineAnnealingLR(T_max=epochs))")
    g.add_argument("--warmup-lr", type=float, default=0.0, help="timm_cosine: the rate the warm-up starts from")
    g.add_argument("--cooldown-epochs", type=int, default=0,
                   help="timm_cosine: epochs at --min-lr after the cosine, counted inside --max-epochs")
    g.add_argument("--step-size", type=int, default=30, help="step: epochs between decays")
    g.add_argument("--milestones", type=int, nargs="+", default=[100, 150], help="multistep: decay epochs")
    g.add_argument("--gamma", type=float, default=0.1, help="step/multistep/plateau decay factor")
    g.add_argument("--patience", type=int, default=10, help="plateau: epochs without improvement")
    g.add_argument("--batch-size", type=int, default=128, help="per device")
    g.add_argument("--eval-batch-size", type=int, default=1024, help="evaluation batch")
    g.add_argument("--max-epochs", type=int, default=200, help="training epochs")
    g.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm (0: off)")
    g.add_argument("--ema-decay", type=float, default=0.0, help="EMA of weights, evaluated instead (0: off)")
    g.add_argument("--criterion", default="ce",
                   help=f"one of {', '.join(CRITERIONS.names())} (ce: the original's label smoothing; torch_ls: torch's)")
    g.add_argument("--label-smoothing", action="store_true", help="smoothed targets (see --criterion)")
    g.add_argument("--smoothing", type=float, default=0.1, help="label smoothing amount")

    g = p.add_argument_group("augmentation")
    g.add_argument("--policy", default=None,
                   help=f"the per-image augmentation policy, one of {', '.join(POLICIES.names())} (default none); "
                        f"--autoaugment, --randaugment and --trivialaugment are its original spellings")
    g.add_argument("--autoaugment", action="store_true", help="AutoAugment (CIFAR10 policy; SVHN policy on svhn)")
    g.add_argument("--randaugment", action="store_true", help="RandAugment with --ra-n ops at --ra-m (torchvision's)")
    g.add_argument("--ra-n", type=int, default=2,
                   help="RandAugment, timm_randaugment and k47_randaugment: operations per image")
    g.add_argument("--ra-m", type=int, default=9,
                   help="RandAugment: magnitude bin, 0-30 (torchvision's); --policy k47_randaugment: "
                        "kentaroy47's m, 0-30; --policy timm_randaugment: timm's magnitude, 0-10 (rand-m9 is 9)")
    g.add_argument("--ra-mstd", type=float, default=0.5,
                   help="timm_randaugment: std of the magnitude drawn per op, N(--ra-m, std) clipped to [0, 10] "
                        "(timm's mstd; 0: fixed; inf or above 100: uniform on [0, --ra-m]; default 0.5, as "
                        "rand-m9-mstd0.5-inc1)")
    g.add_argument("--ra-prob", type=float, default=0.5,
                   help="timm_randaugment: probability each drawn op is applied (timm's p; default 0.5)")
    g.add_argument("--ra-inc", type=int, default=1, choices=[0, 1],
                   help="timm_randaugment: 1 draws from timm's increasing op set (inc1: severity grows with the "
                        "magnitude), 0 from its original set (default 1)")
    g.add_argument("--trivialaugment", action="store_true", help="TrivialAugmentWide")
    g.add_argument("--aa-ops", default="original", choices=["original", "torchvision"],
                   help="AutoAugment op semantics: original (ViT-CIFAR's PIL ops: grey fill, rotate +theta only, "
                        "bicubic shear, rounded translate, solarize from 256) or torchvision's")
    g.add_argument("--crop-padding", type=int, default=4, help="random crop padding (0: no crop)")
    g.add_argument("--crop", default="pad", choices=["pad", "timm_rrc"],
                   help="training crop: pad (the original's pad-and-crop, --crop-padding) or timm_rrc (timm's "
                        "RandomResizedCropAndInterpolation back to the image size, --rrc-*; timm's own on the "
                        "workers path, a pixel-exact batched copy on the device)")
    g.add_argument("--rrc-scale", type=float, nargs=2, default=list(RRC_DEFAULTS["rrc_scale"]), metavar=("MIN", "MAX"),
                   help="timm_rrc: range of the crop's area, a fraction of the image's (default timm's 0.08 1)")
    g.add_argument("--rrc-ratio", type=float, nargs=2, default=list(RRC_DEFAULTS["rrc_ratio"]), metavar=("MIN", "MAX"),
                   help="timm_rrc: range of the crop's aspect ratio, log-uniform (default 3/4 4/3)")
    g.add_argument("--rrc-interpolation", default=RRC_DEFAULTS["rrc_interpolation"],
                   choices=["random", "bilinear", "bicubic"],
                   help="timm_rrc: the resize filter; random picks bilinear or bicubic per image, as timm's train "
                        "transform (default random)")
    g.add_argument("--no-hflip", dest="hflip", action="store_false", default=None,
                   help="no horizontal flip (never flipped on svhn)")
    g.add_argument("--cutmix", action="store_true", help="CutMix, batch level, as the original")
    g.add_argument("--cutmix-beta", type=float, default=1.0, help="CutMix: lam ~ Beta(b, b)")
    g.add_argument("--mixup", action="store_true", help="Mixup, batch level, as the original")
    g.add_argument("--mixup-alpha", type=float, default=1.0, help="Mixup: lam ~ Beta(a, a)")
    g.add_argument("--mix-prob", type=float, default=None,
                   help="probability a batch is mixed (default: 0.8 for mixup alone, as the original; else 1)")
    g.add_argument("--mix-choice", default="original", choices=["original", "random"],
                   help="with --mixup --cutmix: original applies CutMix only (as ViT-CIFAR did); "
                        "random picks one of them per batch")
    g.add_argument("--mixup-off-epoch", type=int, default=0,
                   help="mixing (mixup/cutmix) stops after this many epochs, as timm's flag (0: never)")
    g.add_argument("--rcpaste", action="store_true", help="RandomCropPaste")
    g.add_argument("--repeated-aug", type=int, default=1,
                   help="repeated augmentation: each drawn image appears N times in a row in the epoch (DeiT's RASampler)")
    g.add_argument("--cutout", type=int, default=0, help="Cutout square side (0: off)")
    g.add_argument("--random-erasing", type=float, default=0.0, help="random erasing probability (0: off)")
    g.add_argument("--erasing-style", default="torchvision", choices=["torchvision", "zhong"],
                   help="random erasing: torchvision's (area 0.02-0.33, log-uniform ratio 0.3-3.3, N(0, 1) noise) or "
                        "zhong, Zhong et al.'s own code (area 0.02-0.4, uniform ratio 0.3-3.33, up to 100 tries, "
                        "filled with the dataset mean; as SPT-LSA)")

    g = p.add_argument_group("run")
    g.add_argument("--recipe", default=None,
                   help="a published recipe's flag defaults (python main.py --list-recipes); flags given here win. "
                        "The plain defaults are the vit_cifar recipe")
    g.add_argument("--list-recipes", action="store_true", help="print the recipe table (model, epochs, published "
                                                               "accuracy, source) and exit")
    g.add_argument("--seed", type=int, default=42, help="seeds every random draw (data order, augmentation, init)")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="auto: CUDA, else MPS, else CPU")
    g.add_argument("--precision", default="16", choices=["16", "32", "bf16", "fp16"],
                   help="16: bf16 autocast on CUDA where supported, else fp16 with a scaler; fp32 on the CPU")
    g.add_argument("--compile", default="auto",
                   choices=["auto", "on", "off", "reduce-overhead", "max-autotune", "step", "graphs"],
                   help="torch.compile of the model with static shapes (auto: on CUDA); reduce-overhead also "
                        "captures it in CUDA graphs; step: the whole training step (forward, backward, optimizer, "
                        "lr, metrics) under one torch.compile; graphs: that step captured in one CUDA graph (CUDA, "
                        "adam/adamw)")
    g.add_argument("--off-benchmark", action="store_true", help="cudnn.benchmark off")
    g.add_argument("--output-dir", default=None, help="everything the run writes (default: runs/<experiment name>)")
    g.add_argument("--experiment-name", default=None, help="default: as the original, e.g. vit_c10_aa_ls")
    g.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="continue the run in --output-dir, or from the given checkpoint")
    g.add_argument("--eval-only", action="store_true", help="evaluate --weights on the test set and exit")
    g.add_argument("--weights", nargs="+", default=None, help="weights for --eval-only (several: ensembled)")
    g.add_argument("--tta", action="store_true", help="flip test-time augmentation in the final evaluation")
    g.add_argument("--skip-nonfinite", action="store_true", help="skip steps whose loss is not finite")
    g.add_argument("--eval-every", type=int, default=1,
                   help="evaluate every N epochs (the last epoch always); the other rows of metrics.csv are empty there")
    g.add_argument("--save-every", type=int, default=0,
                   help="write the checkpoint every N epochs and on the last (0: whenever it costs under 1%% "
                        "of the time since the last write)")
    g.add_argument("--dry-run", action="store_true", help="2 training and 2 evaluation batches, nothing written")
    g.add_argument("--log-interval", type=int, default=50, help="steps between progress-bar refreshes")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm bars")
    g.add_argument("--api-key", default=None, help="Comet API key (or COMET_API_KEY)")
    g.add_argument("--comet-offline", action="store_true", help="log Comet offline, under --output-dir/comet")
    g.add_argument("--project-name", default="VisionTransformer", help="Comet project")
    return p


def experiment_name(args):
    name = f"{args.model_name}_{args.dataset}"
    policy = {"autoaugment": "_aa", "randaugment": "_ra", "trivialaugment": "_ta", "timm_randaugment": "_tra",
              "k47_randaugment": "_k47ra"}
    name += policy.get(getattr(args, "policy", None) or "", "")
    for flag, suffix in [("label_smoothing", "ls"), ("rcpaste", "rc"), ("cutmix", "cm"), ("mixup", "mu"),
                         ("off_cls_token", "gap")]:
        if getattr(args, flag):
            name += f"_{suffix}"
    return name


def parse_args(argv=None):
    """The flags, with --recipe's values as the defaults, so a flag on the command line still wins."""
    parser = get_args_parser()
    first, _ = parser.parse_known_args(argv)
    if first.recipe is not None:
        import recipes
        parser.set_defaults(**recipes.resolve(first.recipe, first.dataset))
    return parser.parse_args(argv)


def list_recipes():
    import recipes
    parser = get_args_parser()
    print(recipes.table(defaults={a.dest: a.default for a in parser._actions}))


