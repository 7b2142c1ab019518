"""ViT-CIFAR: train a Vision Transformer (or a reference CNN) from scratch on CIFAR-10,
CIFAR-100, SVHN or any image folder.

    python main.py --dataset c10 --label-smoothing --autoaugment

This is the one place where flags become objects: `main(args)` resolves the flags, builds
data, model, loss, optimizer and schedule by name through the registries, then runs a plain
loop of `train_one_epoch` / `evaluate` (engine.py), writing a full checkpoint atomically
after every epoch. See README for every flag.
"""
import argparse
import contextlib
import copy
import math
import os
import shutil
import sys
import tempfile
import time
from types import SimpleNamespace

import torch
import torch.distributed as dist

import vit
from augment import build_extras, build_mixer, build_policy
from criterions import CRITERIONS
from data import DATASETS, MODEL_KEYS, check_fingerprint, epoch_seed, fingerprint, load_data
from loaders import build_loaders
import protocol
from engine import EMA, NonFiniteLoss, evaluate, train_one_epoch
from evaluation import classification_report, ensemble, predict_logits
from plot import plot_confusion, plot_run
from loggers import CSVLogger, NullLogger, build_comet
from models import MODELS, build_model, check_image_size, check_options
from pretrained import build_pretrained
from optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler
from utils import (TEMP_PREFIX, UserError, atomic_save, run_command, count_parameters, load_checkpoint, pick_device, rng_state,
                   seed_everything, set_rng_state, write_json)

CHECKPOINT = "checkpoint.pt"
# Flags that may change between a run and its --resume without changing what it computes.
RESUMABLE_CHANGES = {"resume", "device", "workers", "api_key", "comet_offline", "progress", "log_interval", "save_every",
                     "eval_batch_size", "output_dir", "output_dir_given", "compile", "project_name", "data_dir",
                     "off_benchmark", "input_size", "tta", "run_classes", "run_fingerprint", "eval_every"}


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


def get_args_parser():
    p = _Parser(description="Train ViT-CIFAR and friends from scratch.",
                formatter_class=_HelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="c10", help="c10, c100, svhn, or folder (an ImageFolder tree in --data-dir)")
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
    g.add_argument("--shakedrop", type=float, default=None, help="PyramidNet: final ShakeDrop probability (default 0.5)")
    g.add_argument("--zero-init-residual", action="store_true", default=None, help="ResNets: zero the last BN of each block")
    g.add_argument("--se", action="store_true", default=None, help="ResNets: squeeze-and-excitation blocks")

    g = p.add_argument_group("optimization")
    g.add_argument("--optimizer", default="adam", help="sgd, adam, adamw, rmsprop, adan, madgrad")
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
    g.add_argument("--scheduler", default="cosine", help="cosine, step, multistep, plateau, constant")
    g.add_argument("--warmup-epoch", type=int, default=5,
                   help="epochs of linear warm-up (as the original: lr * e / W in epoch e, epoch 0 at 0)")
    g.add_argument("--lr-per-step", action="store_true",
                   help="modern schedule: warm-up and cosine per optimizer step, ending at --min-lr on the last "
                        "step (default: the original's per-epoch GradualWarmup + CosineAnnealingLR(T_max=epochs))")
    g.add_argument("--step-size", type=int, default=30, help="step: epochs between decays")
    g.add_argument("--milestones", type=int, nargs="+", default=[100, 150], help="multistep: decay epochs")
    g.add_argument("--gamma", type=float, default=0.1, help="step/multistep/plateau decay factor")
    g.add_argument("--patience", type=int, default=10, help="plateau: epochs without improvement")
    g.add_argument("--batch-size", type=int, default=128, help="per device")
    g.add_argument("--eval-batch-size", type=int, default=1024, help="evaluation batch")
    g.add_argument("--max-epochs", type=int, default=200, help="training epochs")
    g.add_argument("--grad-clip", type=float, default=0.0, help="max gradient norm (0: off)")
    g.add_argument("--ema-decay", type=float, default=0.0, help="EMA of weights, evaluated instead (0: off)")
    g.add_argument("--criterion", default="ce", help="ce (original label smoothing) or torch_ls")
    g.add_argument("--label-smoothing", action="store_true", help="smoothed targets (see --criterion)")
    g.add_argument("--smoothing", type=float, default=0.1, help="label smoothing amount")

    g = p.add_argument_group("augmentation")
    g.add_argument("--autoaugment", action="store_true", help="AutoAugment (CIFAR10 policy; SVHN policy on svhn)")
    g.add_argument("--randaugment", action="store_true", help="RandAugment with --ra-n ops at --ra-m")
    g.add_argument("--ra-n", type=int, default=2, help="RandAugment: operations per image")
    g.add_argument("--ra-m", type=int, default=9, help="RandAugment: magnitude, 0-30")
    g.add_argument("--trivialaugment", action="store_true", help="TrivialAugmentWide")
    g.add_argument("--aa-ops", default="original", choices=["original", "torchvision"],
                   help="AutoAugment op semantics: original (ViT-CIFAR's PIL ops: grey fill, rotate +theta only, "
                        "bicubic shear, rounded translate, solarize from 256) or torchvision's")
    g.add_argument("--crop-padding", type=int, default=4, help="random crop padding (0: no crop)")
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
    g.add_argument("--rcpaste", action="store_true", help="RandomCropPaste")
    g.add_argument("--repeated-aug", type=int, default=1,
                   help="repeated augmentation: each drawn image appears N times in a row in the epoch (DeiT's RASampler)")
    g.add_argument("--cutout", type=int, default=0, help="Cutout square side (0: off)")
    g.add_argument("--random-erasing", type=float, default=0.0, help="random erasing probability (0: off)")

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
    g.add_argument("--compile", default="auto", choices=["auto", "on", "off", "reduce-overhead", "max-autotune"],
                   help="torch.compile of the model with static shapes (auto: on CUDA); reduce-overhead also "
                        "captures it in CUDA graphs")
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
    for flag, suffix in [("autoaugment", "aa"), ("randaugment", "ra"), ("trivialaugment", "ta"), ("label_smoothing", "ls"),
                         ("rcpaste", "rc"), ("cutmix", "cm"), ("mixup", "mu"), ("off_cls_token", "gap")]:
        if getattr(args, flag):
            name += f"_{suffix}"
    return name


def _check(condition, message):
    if not condition:
        raise UserError(message)


def resolve_args(args):
    """Validate the flags and fill in what defaults to 'depends' (never overriding a set flag)."""
    for name, value in [("batch-size", args.batch_size), ("eval-batch-size", args.eval_batch_size),
                        ("max-epochs", args.max_epochs), ("image-size", args.image_size),
                        ("log-interval", args.log_interval)]:
        _check(value > 0, f"--{name} must be positive, got {value}")
    for name, value in [("lr", args.lr), ("warmup-epoch", args.warmup_epoch), ("min-lr", args.min_lr),
                        ("weight-decay", args.weight_decay), ("workers", args.workers), ("train-subset", args.train_subset),
                        ("grad-clip", args.grad_clip), ("cutout", args.cutout), ("crop-padding", args.crop_padding)]:
        _check(value >= 0, f"--{name} must not be negative, got {value}")
    for name in ("lr", "min_lr", "weight_decay", "momentum", "beta1", "beta2", "grad_clip", "smoothing", "dropout",
                 "drop_path", "sam_rho", "gamma", "mixup_alpha", "cutmix_beta", "random_erasing", "ema_decay"):
        value = getattr(args, name)
        _check(value is None or math.isfinite(value), f"--{name.replace('_', '-')} must be a finite number, got {value}")
    _check(0 <= args.seed < 2**63, f"--seed must be in [0, 2**63), got {args.seed}")
    _check(args.lr > 0, "--lr must be positive")
    _check(args.min_lr <= args.lr, f"--min-lr {args.min_lr} is above --lr {args.lr}")
    if args.warmup_epoch >= args.max_epochs and not args.lr_per_step:
        # As in the original: a warm-up longer than the run never finishes; say so rather than refuse.
        print(f"note: --warmup-epoch {args.warmup_epoch} is not below --max-epochs {args.max_epochs}: the learning "
              f"rate climbs the whole run and peaks at {args.lr * (args.max_epochs - 1) / args.warmup_epoch:.3g}",
              file=sys.stderr)
    _check(args.warmup_epoch < args.max_epochs or not args.lr_per_step or args.warmup_epoch == args.max_epochs == 1,
           f"--lr-per-step: --warmup-epoch {args.warmup_epoch} must be below --max-epochs {args.max_epochs}")
    for name in ("smoothing", "dropout", "drop_path", "random_erasing", "ema_decay", "shakedrop"):
        value = getattr(args, name)
        _check(value is None or 0 <= value < 1, f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
    _check(0 <= args.beta1 < 1 and 0 <= args.beta2 < 1, "--beta1 and --beta2 must be in [0, 1)")
    _check(args.momentum >= 0, f"--momentum must not be negative, got {args.momentum}")
    _check(not (args.nesterov and args.momentum == 0), "--nesterov needs a positive --momentum")
    for name in ("step_size", "gamma", "mixup_alpha", "cutmix_beta", "sam_rho"):
        _check(getattr(args, name) > 0, f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    _check(args.patience >= 0 and args.ra_n >= 0, "--patience and --ra-n must not be negative")
    _check(0 <= args.ra_m <= 30, f"--ra-m must be in [0, 30], got {args.ra_m}")
    policies = [n for n in ("autoaugment", "randaugment", "trivialaugment") if getattr(args, n)]
    _check(len(policies) <= 1, f"choose one augmentation policy, not {' and '.join('--' + n for n in policies)}")
    args.policy = policies[0] if policies else "none"
    args.aa_policy = "svhn" if args.dataset == "svhn" else "cifar10"
    if args.hflip is None:
        args.hflip = args.dataset != "svhn"  # digits are not mirror-symmetric
    _check(args.mix_prob is None or 0 <= args.mix_prob <= 1, f"--mix-prob must be in [0, 1], got {args.mix_prob}")
    _check(args.dataset in DATASETS, f"unknown dataset {args.dataset!r}; choose from: {', '.join(DATASETS.names())}")
    _check(args.criterion in CRITERIONS, f"unknown criterion {args.criterion!r}; choose from: {', '.join(CRITERIONS.names())}")
    _check(args.optimizer in OPTIMIZERS, f"unknown optimizer {args.optimizer!r}; choose from: {', '.join(OPTIMIZERS.names())}")
    _check(args.scheduler in SCHEDULERS, f"unknown scheduler {args.scheduler!r}; choose from: {', '.join(SCHEDULERS.names())}")
    _check(not (args.sam and args.adaptive_sam), "choose --sam or --adaptive-sam, not both")
    _check(not args.weights or args.eval_only, "--weights is for --eval-only (to continue a run use --resume)")
    _check(not args.eval_only or args.weights, "--eval-only needs --weights PATH")
    _check(not (args.eval_only and args.resume), "--eval-only and --resume do not go together")
    _check(args.val_split >= 0 and args.folds >= 0, "--val-split and --folds must not be negative")
    _check(args.folds != 1, "--folds needs at least 2 folds")
    _check(not (args.val_split and args.folds), "choose --val-split or --folds, not both")
    _check(not (args.folds and args.seeds), "choose --folds or --seeds, not both (each starts its own set of runs)")
    _check(args.save_every >= 0, f"--save-every must not be negative, got {args.save_every}")
    _check(args.eval_every >= 1, f"--eval-every must be positive, got {args.eval_every}")
    _check(args.repeated_aug >= 1, f"--repeated-aug must be at least 1, got {args.repeated_aug}")
    _check(args.eval_every == 1 or args.scheduler != "plateau", "--scheduler plateau needs --eval-every 1")
    _check(args.experiment_name is None or (args.experiment_name not in ("", ".", "..") and "/" not in args.experiment_name
                                            and os.sep not in args.experiment_name),
           f"--experiment-name {args.experiment_name!r} must be a plain folder name (no '/' or '..'); "
           f"use --output-dir to write elsewhere")
    if args.seeds is not None:
        try:
            args.seeds = [int(s) for s in str(args.seeds).split(",")] if not isinstance(args.seeds, list) else args.seeds
        except ValueError:
            raise UserError(f"--seeds takes comma-separated integers, got {args.seeds!r}")
        _check(len(set(args.seeds)) == len(args.seeds), "--seeds has a repeated seed")
    _check(not ((args.folds or args.seeds) and (args.eval_only or args.resume)),
           "--folds and --seeds start new runs; they do not go with --eval-only or --resume")
    if not hasattr(args, "fold"):
        args.fold = None  # (k, i) inside a --folds run
    pretrained = "/" in args.model_name
    _check(pretrained or args.model_name in MODELS,
           f"unknown model {args.model_name!r}; choose from: {', '.join(MODELS.names())}, or timm/<name>, tv/<name>")
    _check(pretrained or args.pretrained is None, "--pretrained is for timm/<name> or tv/<name> backbones")
    if args.model_name in vit.PRESETS:
        _resolve_vit(args)
    else:
        _check(args.patch is None, f"--patch (patches per side) is for the ViT presets ({', '.join(vit.PRESETS)}); "
                                   f"use --patch-size with {args.model_name}")
    if not pretrained:  # refuse options the model does not take, and sizes it cannot, before loading data
        check_options(args.model_name, **model_options(args))
        check_image_size(args.model_name, args.image_size, **model_options(args))
    args.input_size = args.image_size  # make_model changes it for a pretrained backbone
    args.experiment_name = args.experiment_name or experiment_name(args)
    if args.output_dir is None:
        resumed_from_file = args.resume not in (None, "auto")
        args.output_dir = os.path.dirname(os.path.abspath(args.resume)) if resumed_from_file \
            else os.path.join("runs", args.experiment_name)


def _resolve_vit(args):
    _check(args.patch is None or args.patch > 0, "--patch must be positive")
    _check(args.patch_size is None or args.patch_size > 0, "--patch-size must be positive")
    if args.patch_size is None:
        patch = args.patch or 8
        _check(args.image_size % patch == 0, f"--image-size {args.image_size} is not divisible into --patch {patch} patches per side")
        args.patch_size = args.image_size // patch
    else:
        _check(args.patch is None or args.patch * args.patch_size == args.image_size,
               f"--patch {args.patch} and --patch-size {args.patch_size} disagree at --image-size {args.image_size}")
    _check(args.image_size % args.patch_size == 0,
           f"--image-size {args.image_size} is not divisible by --patch-size {args.patch_size}")
    args.patch = args.image_size // args.patch_size
    preset = vit.PRESETS[args.model_name]
    for key in ("head", "num_layers", "hidden", "mlp_hidden"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
        _check(getattr(args, key) > 0, f"--{key.replace('_', '-')} must be positive")
    _check(args.hidden % args.head == 0, f"--hidden {args.hidden} is not divisible by --head {args.head}")


# Model option -> the flag that sets it. Only options the user set (not None) reach the
# builder, and a builder refuses an option it does not take, so no flag is silently ignored
# (the ViT size flags are filled in from the preset by _resolve_vit).
MODEL_FLAGS = {"dropout": "dropout", "drop_path": "drop_path", "patch_size": "patch_size", "num_layers": "num_layers",
               "hidden": "hidden", "mlp_hidden": "mlp_hidden", "head": "head", "cls_token": "off_cls_token",
               "maths": "vit_maths", "shakedrop": "shakedrop", "zero_init_residual": "zero_init_residual", "se": "se"}


def model_options(args):
    options = {option: getattr(args, flag) for option, flag in MODEL_FLAGS.items() if getattr(args, flag) is not None}
    if args.off_cls_token:
        options["cls_token"] = False
    else:
        options.pop("cls_token", None)
    return options


def make_model(args, in_chans):
    """The model, and args.input_size: the side it takes (the images are resized to it on the
    device), which is --image-size except for a pretrained backbone trained at another size."""
    if "/" in args.model_name:
        model, args.input_size = build_pretrained(args.model_name, args.num_classes, in_chans, args.pretrained)
    else:
        model = build_model(args.model_name, args.num_classes, args.image_size, in_chans, **model_options(args))
        args.input_size = args.image_size
    return model


def amp_setup(args, device):
    """(autocast dtype or None, GradScaler or None) for --precision on this device."""
    if args.precision == "32" or (args.precision == "16" and device.type != "cuda"):
        return None, None
    if args.precision == "bf16" or (args.precision == "16" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, None
    _check(device.type == "cuda", "--precision fp16 needs a CUDA device (use bf16 or 32)")
    _check(not (args.sam or args.adaptive_sam), "SAM needs --precision bf16 or 32, not fp16")
    return torch.float16, torch.amp.GradScaler("cuda")


def init_distributed(args):
    """(rank, world size, device). Under torchrun, one process per device (NCCL) or CPU (gloo)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, pick_device(args.device)
    device = pick_device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world_size, device


def load_weights(model, path):
    state = load_checkpoint(path)
    state = state.get("model", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise UserError(f"{path} holds no state dict")
    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path} does not fit the model: {str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}")


def _class_names(args, data):
    # --num-classes may give the model more outputs than the dataset has classes.
    return data.classes + [f"unused_{i}" for i in range(len(data.classes), args.num_classes)]


# What a run's config.json decides for --eval-only of its weights: the network and how its
# inputs were made, so no size flag has to be repeated and TTA follows the run's flips.
RUN_DEFINES = ("model_name", "patch", "patch_size", "head", "num_layers", "hidden", "mlp_hidden", "off_cls_token",
               "vit_maths", "image_size", "num_classes", "hflip", "dropout", "drop_path", "shakedrop",
               "zero_init_residual", "se", "dataset")


def adopt_run_config(args):
    """For --eval-only of weights inside a run folder: take the model flags from that run's
    config.json (a flag the user set to something else is an error, not silently replaced)."""
    folders = {os.path.dirname(os.path.abspath(w)) for w in args.weights}
    configs = [os.path.join(f, "config.json") for f in folders if os.path.isfile(os.path.join(f, "config.json"))]
    if not configs:
        return
    import json
    parser = get_args_parser()
    for path in sorted(configs):
        with open(path) as f:
            config = json.load(f)
        for key in RUN_DEFINES:
            if key not in config:
                continue
            mine, default = getattr(args, key), parser.get_default(key)
            if mine != default and mine != config[key] and getattr(args, "_adopted_" + key, None) is None:
                raise UserError(f"--eval-only: --{key.replace('_', '-')} {mine} differs from the run's "
                                f"{config[key]} ({path})")
            setattr(args, key, config[key])
            setattr(args, "_adopted_" + key, path)
        args.run_classes = config.get("classes")
        args.run_fingerprint = config.get("data_fingerprint")
        if args.output_dir_given and os.path.abspath(args.output_dir) == os.path.dirname(path):
            raise UserError(f"--eval-only would overwrite the training run's files in {args.output_dir}; "
                            f"choose another --output-dir")
    for key in RUN_DEFINES:
        if hasattr(args, "_adopted_" + key):
            delattr(args, "_adopted_" + key)


def _tta(args):
    """Flip TTA only for runs that trained with flips (digits, --no-hflip: flipping hurts)."""
    if args.tta and not args.hflip:
        print("note: --tta skipped: this run trained without horizontal flips", file=sys.stderr)
    return args.tta and bool(args.hflip)


def run_eval_only(args, model, data, device, criterion):
    """Test-set report of one set of weights, or of the ensemble of several."""
    amp_dtype, _ = amp_setup(args, device)
    check_fingerprint(getattr(args, "run_fingerprint", None), fingerprint(data, args.data_dir, args.dataset),
                      "--eval-only", keys=MODEL_KEYS)
    run_classes = getattr(args, "run_classes", None)
    if run_classes is not None and run_classes != data.classes:
        raise UserError(f"--eval-only: the weights were trained on classes {', '.join(run_classes[:5])}"
                        f"{'...' if len(run_classes) > 5 else ''}; --data-dir has {', '.join(data.classes[:5])}"
                        f"{'...' if len(data.classes) > 5 else ''}")
    tta = _tta(args)
    probs = []
    for path in args.weights:
        load_weights(model, path)
        logits = predict_logits(model.to(device), data.test_x, data.mean, data.std, args.input_size, device,
                                args.eval_batch_size, tta=tta, amp_dtype=amp_dtype)
        probs.append(logits.softmax(-1))
    probs = ensemble(probs)
    report = classification_report(probs, data.test_y, _class_names(args, data))
    report["test_loss"] = criterion(probs.clamp(min=1e-12).log(), data.test_y).item()
    print(f"test_loss {report['test_loss']:.4f} test_acc {report['accuracy']:.4f} top5 {report['top5']:.4f} "
          f"macro_f1 {report['macro_f1']:.4f}")
    width = max(len(c) for c in report["classes"])
    for name, acc in report["per_class_accuracy"].items():
        print(f"  {name:<{width}}  {'-' if acc is None else f'{acc:.4f}'}")
    if args.output_dir_given:
        os.makedirs(args.output_dir, exist_ok=True)
        write_json(report, os.path.join(args.output_dir, "eval_report.json"))
        plot_confusion(report["confusion"], report["classes"], os.path.join(args.output_dir, "confusion.png"))
    return report


def final_evaluation(args, model, data, device, amp_dtype, criterion, out_dir, comet):
    """The test set, once, with the final weights: report.json, confusion.png, curves.png."""
    logits = predict_logits(model, data.test_x, data.mean, data.std, args.input_size, device,
                            args.eval_batch_size, tta=_tta(args), amp_dtype=amp_dtype)
    report = classification_report(logits, data.test_y, _class_names(args, data))
    report["test_loss"] = criterion(logits, data.test_y).item()
    write_json(report, os.path.join(out_dir, "report.json"))
    for name, path in [("confusion_matrix", plot_confusion(report["confusion"], report["classes"],
                                                           os.path.join(out_dir, "confusion.png"))),
                       ("curves", plot_run(out_dir))]:
        comet.log_image(path, name)
    comet.log_metrics({"final_test_acc": report["accuracy"], "final_test_loss": report["test_loss"],
                       "final_macro_f1": report["macro_f1"]}, epoch=args.max_epochs)
    return report


def best_and_final(args, history, report, final, data, device, amp_dtype, out_dir):
    """Both numbers users ask for: the final epoch's test accuracy and the best epoch's.

    With --val-split the best epoch is chosen on validation, and its test accuracy is that of its
    saved weights (model_best.pth); without, it is chosen on the per-epoch test accuracy itself,
    which flatters the model, and the report says so."""
    out = {"final_epoch": args.max_epochs, "final_test_acc": report["accuracy"]}
    if data.val_y is not None:
        rows = [r for r in history if not math.isnan(r["val_acc"])]
        best = max(rows, key=lambda r: r["val_acc"])
        best_path = os.path.join(out_dir, "model_best.pth")
        if best["epoch"] == args.max_epochs or not os.path.exists(best_path):
            acc = report["accuracy"]
        else:
            model = copy.deepcopy(final)
            model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True))
            logits = predict_logits(model.to(device), data.test_x, data.mean, data.std, args.input_size, device,
                                    args.eval_batch_size, tta=_tta(args), amp_dtype=amp_dtype)
            acc = float((logits.argmax(-1) == data.test_y).float().mean())
        out.update(best_epoch=best["epoch"], best_val_acc=best["val_acc"], best_test_acc=acc,
                   best_chosen_on="validation")
    else:
        rows = [r for r in history if not math.isnan(r["test_acc"])]
        best = max(rows, key=lambda r: r["test_acc"])
        out.update(best_epoch=best["epoch"], best_test_acc=best["test_acc"],
                   best_chosen_on="test (optimistic: the test set picks the epoch)")
    return out


def _summary(row):
    split = "val" if "val_acc" in row else "test"
    held = (f"{split} loss {row[split + '_loss']:.4f} acc {row[split + '_acc']:.4f}"
            if not math.isnan(row[split + "_acc"]) else f"{split} not evaluated (--eval-every)")
    return (f"epoch {row['epoch']:>3} | train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f} | "
            f"{held} | lr {row['lr']:.2e} | {row['epoch_seconds']:.1f}s {row['train_images_per_second']:.0f} img/s")


def _resume_state(args, path, data_fingerprint):
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "args" not in ckpt:
        raise UserError(f"{path} is not a ViT-CIFAR training checkpoint")
    check_fingerprint(ckpt.get("data"), data_fingerprint, "--resume")  # older checkpoints have none
    saved = ckpt["args"]
    differs = sorted(k for k, v in vars(args).items()
                     if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v)
    if differs:
        raise UserError("--resume: these flags differ from the checkpoint's run: "
                        + ", ".join(f"--{k.replace('_', '-')} ({saved[k]} there, {getattr(args, k)} here)" for k in differs))
    return ckpt


def save_augmented_grid(loader, data, path, caption):
    """8x8 augmented training images, un-normalised and shown 4x (nearest) so the augmentation
    can be judged by eye, with a caption saying what made them."""
    import torchvision.utils
    from PIL import Image, ImageDraw
    loader.set_epoch(0)
    x, _ = next(iter(loader))
    mean = torch.tensor(data.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=x.device).view(1, -1, 1, 1)
    x = (x[:64].float() * std + mean).clamp(0, 1).cpu()
    x = torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")
    grid = torchvision.utils.make_grid(x, nrow=8, padding=4, pad_value=1.0)
    img = Image.fromarray((grid.permute(1, 2, 0).squeeze(-1).numpy() * 255).round().astype("uint8"))
    canvas = Image.new("RGB", (img.width, img.height + 24), "white")
    canvas.paste(img.convert("RGB"), (0, 24))
    ImageDraw.Draw(canvas).text((6, 6), caption, fill="black")
    canvas.save(path)


def _augmentation_caption(args):
    parts = [f"crop pad {args.crop_padding}" if args.crop_padding else "no crop", "flip" if args.hflip else "no flip"]
    if args.policy != "none":
        parts.append(args.policy + (f" ({args.aa_policy}, {args.aa_ops} ops)" if args.policy == "autoaugment" else ""))
    parts += [name for name in ("rcpaste", "mixup", "cutmix") if getattr(args, name)]
    parts += [f"cutout {args.cutout}"] * bool(args.cutout) + [f"erasing {args.random_erasing}"] * bool(args.random_erasing)
    return f"augmented training images ({args.input_path} path; mixing is per batch, not shown): " + ", ".join(parts)


def build_training(args, data, model, device, rank=0, world_size=1):
    """Loaders, optimizer, schedule, precision, EMA and batch mixing for a model, from the flags."""
    model.to(device)
    policies = build_policy(args.policy, dataset_policy=args.aa_policy, ops=args.aa_ops, ra_n=args.ra_n, ra_m=args.ra_m)
    train_loader, test_loader = build_loaders(
        data, device, input_path=args.input_path, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
        input_size=args.input_size, crop_padding=args.crop_padding, hflip=args.hflip, seed=args.seed,
        policies=policies, extras=build_extras(rcpaste=args.rcpaste, cutout=args.cutout,
                                               random_erasing=args.random_erasing),
        workers=args.workers, rank=rank, world_size=world_size, repeats=args.repeated_aug)
    steps_per_epoch = min(2, len(train_loader)) if args.dry_run else len(train_loader)
    optimizer = build_optimizer(model, args)
    amp_dtype, scaler = amp_setup(args, device)
    ema = EMA(model, args.ema_decay) if args.ema_decay > 0 else None
    mixer = build_mixer(mixup=args.mixup, cutmix=args.cutmix, mixup_alpha=args.mixup_alpha,
                        cutmix_beta=args.cutmix_beta, mix_prob=args.mix_prob, choice=args.mix_choice)
    return SimpleNamespace(model=model, train_loader=train_loader, test_loader=test_loader, optimizer=optimizer,
                           scheduler=build_scheduler(optimizer, args, steps_per_epoch), amp_dtype=amp_dtype,
                           scaler=scaler, ema=ema, mixer=mixer)


def wrap_model(model, args, device, world_size=1):
    """The module the loop calls: DistributedDataParallel under torchrun, compiled on CUDA."""
    net = model
    if world_size > 1:
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps modules, keeps the parameters
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile == "on" or (args.compile == "auto" and device.type == "cuda"):
        # Static shapes: the device path drops the last partial batch and pads evaluation's.
        net = torch.compile(net, dynamic=False)
    elif args.compile in ("reduce-overhead", "max-autotune"):
        net = torch.compile(net, dynamic=False, mode=args.compile)
    return net


class Interrupted(UserError):
    code = 130


class CheckpointPolicy:
    """When to write the checkpoint: every `every` epochs and on the last one, or, with every=0
    (the default), whenever the time since the last write is at least 100 times what that write
    took, so checkpoints cost at most ~1% of the run however fast the epochs are."""

    def __init__(self, every):
        self.every, self.last_write, self.write_seconds = every, None, 0.0

    def due(self, epoch, last):
        if last or self.last_write is None:
            return True
        if self.every > 0:
            return (epoch + 1) % self.every == 0
        return time.perf_counter() - self.last_write >= 100 * self.write_seconds

    @contextlib.contextmanager
    def timed(self):
        start = time.perf_counter()
        yield
        self.last_write = time.perf_counter()
        self.write_seconds = self.last_write - start


def main(args, epoch_callbacks=()):
    """Train (or evaluate) as the flags say. `epoch_callbacks`: fn(epoch, row) after each epoch
    (sweep.py reports to Optuna through one)."""
    args.output_dir_given = args.output_dir is not None
    if args.eval_only and args.weights:
        adopt_run_config(args)
    resolve_args(args)
    if args.folds or args.seeds:
        return protocol.run(args, main)
    rank, world_size, device = init_distributed(args)
    args.device_type = device.type
    is_main = rank == 0
    _check(world_size == 1 or not args.skip_nonfinite, "--skip-nonfinite is not supported with several processes")
    torch.backends.cudnn.benchmark = not args.off_benchmark
    seed_everything(args.seed)

    data = load_data(args)
    if args.num_classes is None:
        args.num_classes = len(data.classes)
    max_label = int(max(data.train_y.max(), data.test_y.max()))
    _check(args.num_classes > max_label, f"--num-classes {args.num_classes} is too small: the labels go up to {max_label}")
    model = make_model(args, data.in_chans)
    _check(not args.label_smoothing or args.num_classes >= 2,
           f"--label-smoothing needs at least 2 classes; the data has {args.num_classes}")
    criterion = CRITERIONS.build(args.criterion, args.num_classes, args.label_smoothing, args.smoothing)
    if args.eval_only:
        return run_eval_only(args, model, data, device, criterion)

    if args.input_path == "auto":
        args.input_path = "device" if device.type in ("cuda", "mps") else "workers"
    out_dir = tempfile.mkdtemp(prefix="vit-cifar-dry-") if args.dry_run else args.output_dir
    ckpt_path = os.path.join(out_dir, CHECKPOINT)
    resume_path = None
    if args.resume:
        resume_path = ckpt_path if args.resume == "auto" else args.resume
        _check(os.path.isfile(resume_path), f"--resume: no checkpoint at {resume_path}")
    elif is_main and not args.dry_run and os.path.exists(ckpt_path):
        raise UserError(f"{out_dir} already holds a run; add --resume to continue it, or choose another --output-dir")
    with claim_output_dir(out_dir, enabled=is_main and not args.dry_run):
        return _train(args, data, model, device, criterion, out_dir, ckpt_path, resume_path, rank, world_size,
                      epoch_callbacks)


@contextlib.contextmanager
def claim_output_dir(out_dir, enabled=True):
    """The run's folder, locked against a second run, and left as it was found if the run fails
    before its first checkpoint (no stray config.json or augmented.png from a failed start).

    The lock is a file holding the owner's pid; a lock whose process is gone is taken over.
    """
    existed = os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if not enabled:
        yield
        return
    before = set(os.listdir(out_dir))
    for name in before:  # half-written files of a run killed mid-write
        if name.startswith(TEMP_PREFIX):
            os.unlink(os.path.join(out_dir, name))
    lock = os.path.join(out_dir, ".lock")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(open(lock).read().strip() or 0)
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except (ValueError, ProcessLookupError):
            alive = False
        except PermissionError:
            alive = True
        if alive:
            raise UserError(f"{out_dir} is in use by another run (pid {pid}); wait for it or choose another --output-dir")
        os.unlink(lock)  # a stale lock of a process that died
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    except BaseException:
        if not os.path.exists(os.path.join(out_dir, CHECKPOINT)):
            for name in set(os.listdir(out_dir)) - before - {".lock"}:
                path = os.path.join(out_dir, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        raise
    finally:
        if os.path.exists(lock):
            os.unlink(lock)
        if not existed and not os.listdir(out_dir):
            os.rmdir(out_dir)


def _train(args, data, model, device, criterion, out_dir, ckpt_path, resume_path, rank, world_size, epoch_callbacks):
    """The training loop of main(), in a claimed output folder."""
    is_main = rank == 0
    data_fp = fingerprint(data, args.data_dir, args.dataset)  # what --resume and --eval-only check against
    run = build_training(args, data, model, device, rank, world_size)
    model, optimizer, scheduler, scaler, ema = run.model, run.optimizer, run.scheduler, run.scaler, run.ema

    start_epoch, history = 0, []
    if resume_path:
        ckpt = _resume_state(args, resume_path, data_fp)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"])
        start_epoch, history = ckpt["epoch"] + 1, ckpt["history"]

    net = wrap_model(model, args, device, world_size)

    csv_log = CSVLogger(os.path.join(out_dir, "metrics.csv"))
    comet = build_comet(args) if is_main else NullLogger()
    if is_main:
        config = {k: v for k, v in vars(args).items() if k != "api_key"}
        config.update(parameters=count_parameters(model), device_name=str(device), world_size=world_size,
                      torch=torch.__version__, classes=data.classes, mean=data.mean, std=data.std, in_chans=data.in_chans,
                      data_fingerprint=data_fp, test_split=data.test_split)
        write_json(config, os.path.join(out_dir, "config.json"))
        if resume_path:
            csv_log.rewrite(history)  # drops a row written after the checkpoint we resume from
        comet.log_parameters(config)
        if start_epoch == 0:
            grid = os.path.join(out_dir, "augmented.png")
            save_augmented_grid(run.train_loader, data, grid, _augmentation_caption(args))
            comet.log_image(grid, "augmented_training_images")
        print(f"{args.experiment_name}: {args.model_name} {count_parameters(model) / 1e6:.2f}M parameters, "
              f"{len(data.train_y)} train / {len(data.test_y)} test images, {device}, "
              f"{args.input_path} input path, evaluating on {'a held-out part of train' if data.val_y is not None else data.test_split + '/'}, "
              f"writing to {out_dir}", flush=True)

    max_steps = 2 if args.dry_run else None
    # Bars only on a terminal: redirected to a file they would fill it with carriage returns,
    # and the one summary line per epoch says it all there.
    bars = args.progress and is_main and sys.stderr.isatty()
    epochs = range(start_epoch, 1 if args.dry_run else args.max_epochs)
    saver = CheckpointPolicy(args.save_every)
    checkpointed = start_epoch  # epochs done in the checkpoint on disk
    try:
        for epoch in epochs:
            seed_everything(epoch_seed(args.seed, epoch))  # each epoch's draws depend on (seed, epoch) only
            start = time.perf_counter()
            try:
                train = train_one_epoch(net, run.train_loader, criterion, optimizer, scheduler, device, epoch,
                                        amp_dtype=run.amp_dtype, scaler=scaler, mixer=run.mixer, grad_clip=args.grad_clip,
                                        ema=ema, skip_nonfinite=args.skip_nonfinite, max_steps=max_steps,
                                        log_interval=args.log_interval, progress=bars)
            except NonFiniteLoss as e:
                raise UserError(str(e))
            if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.max_epochs or args.dry_run:
                test = evaluate(ema if ema is not None else net, run.test_loader, criterion, device,
                                amp_dtype=run.amp_dtype, max_steps=max_steps, progress=bars)
            else:  # not evaluated this epoch: the columns stay, empty
                test = dict.fromkeys(("test_loss", "test_acc", "test_top5", "eval_seconds", "eval_images_per_second",
                                      "test_images"), math.nan)
            if hasattr(scheduler, "epoch_end"):
                scheduler.epoch_end(test)
            if data.val_y is not None:  # per-epoch numbers come from the held-out part of the training split
                test = {k.replace("test_", "val_"): v for k, v in test.items()}
            row = {"epoch": epoch + 1, **train, **test, "epoch_seconds": time.perf_counter() - start}
            history.append(row)
            if is_main:
                if saver.due(epoch, last=epoch + 1 == args.max_epochs):
                    with saver.timed():
                        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                                     "ema": ema.state_dict() if ema is not None else None, "epoch": epoch,
                                     "history": history, "rng": rng_state(), "args": vars(args), "data": data_fp},
                                    ckpt_path)
                    checkpointed = epoch + 1
                if data.val_y is not None and not math.isnan(row["val_acc"]) and \
                        row["val_acc"] >= max(r["val_acc"] for r in history if not math.isnan(r["val_acc"])):
                    # The best epoch on validation: its weights, for the test accuracy the report gives.
                    atomic_save((ema.module if ema is not None else model).state_dict(),
                                os.path.join(out_dir, "model_best.pth"))
                # The CSV's epoch time includes this epoch's checkpoint write (the copy inside the
                # checkpoint cannot); a row logged after the last checkpoint is dropped on --resume.
                row = {**row, "epoch_seconds": time.perf_counter() - start}
                csv_log.log(row)
                comet.log_metrics(row, epoch + 1)
                print(_summary(row), flush=True)
            for callback in epoch_callbacks:
                callback(epoch + 1, row)
    except KeyboardInterrupt:
        if not is_main:
            raise
        if checkpointed:
            raise Interrupted(f"interrupted; the checkpoint of epoch {checkpointed} is kept "
                              f"(continue with --resume --output-dir {out_dir})")
        raise Interrupted("interrupted before the first checkpoint; nothing to resume (start the run again)")

    if is_main and not args.dry_run:
        weights = os.path.join(out_dir, "model.pth")
        final = ema.module if ema is not None else model
        atomic_save(final.state_dict(), weights)
        comet.log_asset(weights, f"{args.experiment_name}.pth")
        report = final_evaluation(args, final, data, device, run.amp_dtype, criterion, out_dir, comet)
        report.update(best_and_final(args, history, report, final, data, device, run.amp_dtype, out_dir))
        write_json(report, os.path.join(out_dir, "report.json"))
        comet.end()
        print(f"final test acc {report['accuracy']:.4f} (epoch {report['final_epoch']}; top-5 {report['top5']:.4f}, "
              f"macro-F1 {report['macro_f1']:.4f}{', flip TTA' if _tta(args) else ''}); best test acc "
              f"{report['best_test_acc']:.4f} at epoch {report['best_epoch']} (chosen on {report['best_chosen_on']}); "
              f"weights in {weights}", flush=True)
    if args.dry_run:
        shutil.rmtree(out_dir, ignore_errors=True)
    if world_size > 1:
        dist.destroy_process_group()
    return history


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


def cli(argv=None):
    # The atomic writes leave the previous checkpoint and logs whole whatever stops the run.
    def run(argv):
        args = parse_args(argv)
        return list_recipes() if args.list_recipes else main(args)
    return run_command(run, argv, interrupted="interrupted", disk_note="; earlier checkpoints and logs are intact")


if __name__ == "__main__":
    sys.exit(cli())
