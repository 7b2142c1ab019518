"""The build layer: flags in, objects out.

`resolve_args` checks the flags and fills in what depends on other flags (never overriding
a flag that was set); the builders below turn them into keyword arguments for the data,
model, optimizer, schedule, loaders and augmentation. Nothing below this module reads
`args`: models, loaders, engine, augment and optim take plain keywords.
"""
import math
import os
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist

import vit
from augment import POLICIES, build_mixer, build_policy
from criterions import CRITERIONS
from data import DATASETS, load_dataset
from engine import EMA
from extras import build_extras
from fused_step import MODES as FUSED_MODES
from fused_step import FusedStep
from flags import RRC_DEFAULTS, experiment_name, get_args_parser
from loaders import build_loaders
from loggers import build_comet
from models import MODELS, build_model, check_image_size, check_options
from optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler
from pretrained import build_pretrained
from utils import UserError, pick_device

def check(condition, message):
    """A UserError (one line on the command line) unless `condition`."""
    if not condition:
        raise UserError(message)


def resolve_args(args):
    """Validate the flags and fill in what defaults to 'depends' (never overriding a set flag)."""
    for name in ("lr", "min_lr", "weight_decay", "momentum", "beta1", "beta2", "grad_clip", "smoothing", "dropout",
                 "drop_path", "sam_rho", "gamma", "mixup_alpha", "cutmix_beta", "random_erasing", "ema_decay"):
        value = getattr(args, name)
        check(value is None or math.isfinite(value), f"--{name.replace('_', '-')} must be a finite number, got {value}")
    for name, value in [("batch-size", args.batch_size), ("eval-batch-size", args.eval_batch_size),
                        ("max-epochs", args.max_epochs), ("image-size", args.image_size),
                        ("log-interval", args.log_interval)]:
        check(value > 0, f"--{name} must be positive, got {value}")
    for name, value in [("lr", args.lr), ("warmup-epoch", args.warmup_epoch), ("min-lr", args.min_lr),
                        ("weight-decay", args.weight_decay), ("workers", args.workers), ("train-subset", args.train_subset),
                        ("grad-clip", args.grad_clip), ("cutout", args.cutout), ("crop-padding", args.crop_padding)]:
        check(value >= 0, f"--{name} must not be negative, got {value}")
    check(0 <= args.seed < 2**63, f"--seed must be in [0, 2**63), got {args.seed}")
    check(args.lr > 0, "--lr must be positive")
    check(args.min_lr <= args.lr, f"--min-lr {args.min_lr} is above --lr {args.lr}")
    if args.warmup_epoch >= args.max_epochs and not args.lr_per_step:
        # As in the original: a warm-up longer than the run never finishes; say so rather than refuse.
        print(f"note: --warmup-epoch {args.warmup_epoch} is not below --max-epochs {args.max_epochs}: the learning "
              f"rate climbs the whole run and peaks at {args.lr * (args.max_epochs - 1) / args.warmup_epoch:.3g}",
              file=sys.stderr)
    check(args.warmup_epoch < args.max_epochs or not args.lr_per_step or args.warmup_epoch == args.max_epochs == 1,
           f"--lr-per-step: --warmup-epoch {args.warmup_epoch} must be below --max-epochs {args.max_epochs}")
    for name in ("smoothing", "dropout", "drop_path", "attn_dropout", "random_erasing", "ema_decay", "shakedrop"):
        value = getattr(args, name)
        check(value is None or 0 <= value < 1, f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
    check(0 <= args.beta1 < 1 and 0 <= args.beta2 < 1, "--beta1 and --beta2 must be in [0, 1)")
    check(args.momentum >= 0, f"--momentum must not be negative, got {args.momentum}")
    check(not (args.nesterov and args.momentum == 0), "--nesterov needs a positive --momentum")
    for name in ("step_size", "gamma", "mixup_alpha", "cutmix_beta", "sam_rho"):
        check(getattr(args, name) > 0, f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    check(args.patience >= 0 and args.ra_n >= 0, "--patience and --ra-n must not be negative")
    check(0 <= args.ra_m <= 30, f"--ra-m must be in [0, 30], got {args.ra_m}")
    # --policy NAME, or its original spellings --autoaugment / --randaugment / --trivialaugment.
    named = [f"--policy {args.policy}"] if args.policy not in (None, "none") else []
    aliases = [n for n in ("autoaugment", "randaugment", "trivialaugment") if getattr(args, n)]
    chosen = set(aliases) | ({args.policy} if named else set())
    check(len(chosen) <= 1, f"choose one augmentation policy, not {' and '.join(named + ['--' + n for n in aliases])}")
    check(args.policy is None or args.policy in POLICIES,
          f"unknown --policy {args.policy!r}; choose from: {', '.join(POLICIES.names())}")
    args.policy = chosen.pop() if chosen else "none"
    if args.policy == "timm_randaugment":
        check(args.ra_m <= 10, f"--ra-m is timm's magnitude, 0-10, for --policy timm_randaugment; got {args.ra_m}")
        check(args.ra_mstd >= 0, f"--ra-mstd must not be negative (inf: uniform), got {args.ra_mstd}")
        check(0 <= args.ra_prob <= 1, f"--ra-prob must be in [0, 1], got {args.ra_prob}")
    for name in ("autoaugment", "randaugment", "trivialaugment"):  # the aliases follow, so config.json agrees
        setattr(args, name, args.policy == name)
    args.aa_policy = "svhn" if args.dataset == "svhn" else "cifar10"
    if args.hflip is None:
        args.hflip = args.dataset != "svhn"  # digits are not mirror-symmetric
    check(args.mix_prob is None or 0 <= args.mix_prob <= 1, f"--mix-prob must be in [0, 1], got {args.mix_prob}")
    check(args.dataset in DATASETS, f"unknown dataset {args.dataset!r}; choose from: {', '.join(DATASETS.names())}")
    check(args.criterion in CRITERIONS, f"unknown criterion {args.criterion!r}; choose from: {', '.join(CRITERIONS.names())}")
    check(args.optimizer in OPTIMIZERS, f"unknown optimizer {args.optimizer!r}; choose from: {', '.join(OPTIMIZERS.names())}")
    check(args.scheduler in SCHEDULERS, f"unknown scheduler {args.scheduler!r}; choose from: {', '.join(SCHEDULERS.names())}")
    check(not (args.sam and args.adaptive_sam), "choose --sam or --adaptive-sam, not both")
    check(not args.weights or args.eval_only, "--weights is for --eval-only (to continue a run use --resume)")
    check(not args.eval_only or args.weights, "--eval-only needs --weights PATH")
    check(not (args.eval_only and args.resume), "--eval-only and --resume do not go together")
    check(args.val_split >= 0 and args.folds >= 0, "--val-split and --folds must not be negative")
    check(args.folds != 1, "--folds needs at least 2 folds")
    check(not (args.val_split and args.folds), "choose --val-split or --folds, not both")
    check(not (args.folds and args.seeds), "choose --folds or --seeds, not both (each starts its own set of runs)")
    check(args.save_every >= 0, f"--save-every must not be negative, got {args.save_every}")
    check(args.mixup_off_epoch >= 0, f"--mixup-off-epoch must not be negative, got {args.mixup_off_epoch}")
    check(0 <= args.warmup_lr <= args.lr, f"--warmup-lr must be in [0, --lr], got {args.warmup_lr}")
    check(0 <= args.cooldown_epochs < args.max_epochs,
          f"--cooldown-epochs must be in [0, --max-epochs), got {args.cooldown_epochs}")
    check(args.scheduler == "timm_cosine" or (args.warmup_lr == 0 and args.cooldown_epochs == 0),
          "--warmup-lr and --cooldown-epochs are for --scheduler timm_cosine")
    check(args.eval_every >= 1, f"--eval-every must be positive, got {args.eval_every}")
    check(args.erasing_style == "torchvision" or args.random_erasing > 0,
          f"--erasing-style {args.erasing_style} needs --random-erasing P (the probability an image is erased)")
    (s_lo, s_hi), (r_lo, r_hi) = args.rrc_scale, args.rrc_ratio
    check(0 < s_lo <= s_hi <= 1, f"--rrc-scale must satisfy 0 < MIN <= MAX <= 1, got {s_lo} {s_hi}")
    check(0 < r_lo <= r_hi < math.inf, f"--rrc-ratio must satisfy 0 < MIN <= MAX (finite), got {r_lo} {r_hi}")
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in RRC_DEFAULTS}
    check(args.crop == "timm_rrc" or given == RRC_DEFAULTS,
          "--rrc-scale, --rrc-ratio and --rrc-interpolation are for --crop timm_rrc")
    check(args.repeated_aug >= 1, f"--repeated-aug must be at least 1, got {args.repeated_aug}")
    check(args.eval_every == 1 or args.scheduler != "plateau", "--scheduler plateau needs --eval-every 1")
    if args.compile in FUSED_MODES:  # the step as one compiled function / CUDA graph (fused_step.py)
        what = f"--compile {args.compile}"
        check(args.scheduler != "plateau", f"{what} needs a schedule known in advance, not --scheduler plateau")
        check(not (args.sam or args.adaptive_sam), f"{what} does not take SAM (its closure runs a second pass)")
        check(not args.skip_nonfinite, f"{what} does not take --skip-nonfinite (it reads every loss on the host)")
        check(args.precision != "fp16", f"{what} needs --precision 16, bf16 or 32 (fp16's scaler reads the host)")
        check(int(os.environ.get("WORLD_SIZE", "1")) == 1, f"{what} runs in one process, not under torchrun")
        check(args.compile != "graphs" or args.optimizer in ("adam", "adamw"),
              f"--compile graphs needs --optimizer adam or adamw (capturable, fused), not {args.optimizer}")
        check(args.compile != "graphs" or pick_device(args.device).type == "cuda",
              f"--compile graphs needs a CUDA device, not {pick_device(args.device).type}")
    check(args.experiment_name is None or (args.experiment_name not in ("", ".", "..") and "/" not in args.experiment_name
                                            and os.sep not in args.experiment_name),
           f"--experiment-name {args.experiment_name!r} must be a plain folder name (no '/' or '..'); "
           f"use --output-dir to write elsewhere")
    if args.seeds is not None:
        try:
            args.seeds = [int(s) for s in str(args.seeds).split(",")] if not isinstance(args.seeds, list) else args.seeds
        except ValueError:
            raise UserError(f"--seeds takes comma-separated integers, got {args.seeds!r}")
        check(len(set(args.seeds)) == len(args.seeds), "--seeds has a repeated seed")
    check(not ((args.folds or args.seeds) and (args.eval_only or args.resume)),
           "--folds and --seeds start new runs; they do not go with --eval-only or --resume")
    if not hasattr(args, "fold"):
        args.fold = None  # (k, i) inside a --folds run
    pretrained = "/" in args.model_name
    check(pretrained or args.model_name in MODELS,
           f"unknown model {args.model_name!r}; choose from: {', '.join(MODELS.names())}, or timm/<name>, tv/<name>")
    check(pretrained or args.pretrained is None, "--pretrained is for timm/<name> or tv/<name> backbones")
    if args.model_name in vit.PRESETS:
        _resolve_vit(args)
    else:
        check(args.patch is None, f"--patch (patches per side) is for the ViT presets ({', '.join(vit.PRESETS)}); "
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
    check(args.patch is None or args.patch > 0, "--patch must be positive")
    check(args.patch_size is None or args.patch_size > 0, "--patch-size must be positive")
    if args.patch_size is None:
        patch = args.patch or 8
        check(args.image_size % patch == 0, f"--image-size {args.image_size} is not divisible into --patch {patch} patches per side")
        args.patch_size = args.image_size // patch
    else:
        check(args.patch is None or args.patch * args.patch_size == args.image_size,
               f"--patch {args.patch} and --patch-size {args.patch_size} disagree at --image-size {args.image_size}")
    check(args.image_size % args.patch_size == 0,
           f"--image-size {args.image_size} is not divisible by --patch-size {args.patch_size}")
    args.patch = args.image_size // args.patch_size
    preset = vit.PRESETS[args.model_name]
    for key in ("head", "num_layers", "hidden", "mlp_hidden"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
        check(getattr(args, key) > 0, f"--{key.replace('_', '-')} must be positive")
    check(args.hidden % args.head == 0, f"--hidden {args.hidden} is not divisible by --head {args.head}")


# Model option -> the flag that sets it. Only options the user set (not None) reach the
# builder, and a builder refuses an option it does not take, so no flag is silently ignored
# (the ViT size flags are filled in from the preset by _resolve_vit).
MODEL_FLAGS = {"dropout": "dropout", "drop_path": "drop_path", "attn_dropout": "attn_dropout", "patch_size": "patch_size", "num_layers": "num_layers",
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
    check(device.type == "cuda", "--precision fp16 needs a CUDA device (use bf16 or 32)")
    check(not (args.sam or args.adaptive_sam), "SAM needs --precision bf16 or 32, not fp16")
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


RUN_DEFINES = ("model_name", "patch", "patch_size", "head", "num_layers", "hidden", "mlp_hidden", "off_cls_token",
               "vit_maths", "image_size", "num_classes", "hflip", "dropout", "drop_path", "attn_dropout", "shakedrop",
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


def make_optimizer(model, args, *, fused=None, capturable=None):
    """The optimizer of the flags. `fused` (default: on CUDA) runs the update in a few launches;
    `capturable` (default: --compile step | graphs on CUDA) keeps Adam's step counts on the
    device, so that a CUDA graph can capture the update and a tensor lr is read there, not once
    per parameter on the host."""
    fused = args.device_type == "cuda" if fused is None else fused
    capturable = args.compile in FUSED_MODES and args.device_type == "cuda" if capturable is None else capturable
    return build_optimizer(model, name=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                           exclude_norm_bias=args.wd_exclude_norm_bias, momentum=args.momentum, nesterov=args.nesterov,
                           beta1=args.beta1, beta2=args.beta2, fused=fused, sam=args.sam,
                           adaptive_sam=args.adaptive_sam, sam_rho=args.sam_rho, capturable=capturable)


def make_scheduler(optimizer, args, steps_per_epoch):
    return build_scheduler(optimizer, name=args.scheduler, steps_per_epoch=steps_per_epoch, lr=args.lr,
                           min_lr=args.min_lr, warmup_epochs=args.warmup_epoch, max_epochs=args.max_epochs,
                           per_step=args.lr_per_step, step_size=args.step_size, milestones=args.milestones,
                           gamma=args.gamma, patience=args.patience, warmup_lr=args.warmup_lr,
                           cooldown_epochs=args.cooldown_epochs)


def load_data(args):
    """The dataset, subset and held-out split that the flags ask for."""
    return load_dataset(args.dataset, args.data_dir, image_size=args.image_size, train_subset=args.train_subset,
                        val_split=args.val_split, fold=getattr(args, "fold", None), seed=args.seed)


def make_comet(args):
    """Comet when asked for (a key, or --comet-offline), else a logger that does nothing."""
    return build_comet(api_key=args.api_key or os.environ.get("COMET_API_KEY"), enabled=not args.dry_run,
                       offline_dir=os.path.join(args.output_dir, "comet") if args.comet_offline else None,
                       project=args.project_name, experiment=args.experiment_name)


def build_training(args, data, model, device, rank=0, world_size=1):
    """Loaders, optimizer, schedule, precision, EMA and batch mixing for a model, from the flags."""
    model.to(device)
    policies = build_policy(args.policy, dataset_policy=args.aa_policy, ops=args.aa_ops, ra_n=args.ra_n, ra_m=args.ra_m,
                            ra_mstd=args.ra_mstd, ra_prob=args.ra_prob, ra_inc=bool(args.ra_inc), mean=data.mean)
    train_loader, test_loader = build_loaders(
        data, device, input_path=args.input_path, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
        input_size=args.input_size, crop_padding=args.crop_padding, hflip=args.hflip, seed=args.seed,
        crops=make_crops(args, data), policies=policies, extras=build_extras(
            rcpaste=args.rcpaste, cutout=args.cutout, random_erasing=args.random_erasing,
            erasing_style=args.erasing_style, mean=data.mean),
        workers=args.workers, rank=rank, world_size=world_size, repeats=args.repeated_aug,
        compile_augment=compiles(args, device) and device.type != "meta")
    steps_per_epoch = min(2, len(train_loader)) if args.dry_run else len(train_loader)
    optimizer = make_optimizer(model, args)
    amp_dtype, scaler = amp_setup(args, device)
    ema = EMA(model, args.ema_decay) if args.ema_decay > 0 else None
    mixer = build_mixer(mixup=args.mixup, cutmix=args.cutmix, mixup_alpha=args.mixup_alpha,
                        cutmix_beta=args.cutmix_beta, mix_prob=args.mix_prob, choice=args.mix_choice)
    return SimpleNamespace(model=model, train_loader=train_loader, test_loader=test_loader, optimizer=optimizer,
                           scheduler=make_scheduler(optimizer, args, steps_per_epoch), amp_dtype=amp_dtype,
                           scaler=scaler, ema=ema, mixer=mixer, steps_per_epoch=steps_per_epoch)


def make_crops(args, data):
    """(workers-path crop, device-path crop) replacing the pad crop, or (None, None) for --crop pad."""
    if args.crop == "pad":
        return None, None
    from timm_crop import BatchTimmRandomResizedCrop, TimmRandomResizedCrop
    height, width = data.train_x.shape[-2:]
    check(height == width, f"--crop timm_rrc resizes back to a square; these images are {height}x{width}")
    options = dict(size=int(height), scale=tuple(args.rrc_scale), ratio=tuple(args.rrc_ratio),
                   interpolation=args.rrc_interpolation)
    return TimmRandomResizedCrop(**options), BatchTimmRandomResizedCrop(**options)


def make_fused_step(args, run, net, criterion, device, fresh_grads=False):
    """The FusedStep that --compile step | graphs asks for (else None), built after --resume has
    loaded the optimizer and schedule it takes over. `net` is the module the loop trains: the raw
    model for "step" (its whole step is compiled), the compiled model for "graphs" (captured).
    fresh_grads: how the graph keeps its gradients (fused_step.py; bench.py --graph-grads)."""
    if args.compile not in FUSED_MODES:
        return None
    return FusedStep(net, criterion, run.optimizer, run.scheduler, device, mode=args.compile,
                     total_steps=args.max_epochs * run.steps_per_epoch, amp_dtype=run.amp_dtype, mixer=run.mixer,
                     grad_clip=args.grad_clip, ema=run.ema, fresh_grads=fresh_grads)


def compiles(args, device):
    """Whether --compile asks for torch.compile here (auto: on CUDA). When it does, compiled code
    draws its random numbers with the same kernels as eager code (inductor's fallback_random), so
    a seed gives the same augmentation and dropout with or without --compile."""
    on = args.compile not in ("off", "auto") or (args.compile == "auto" and device.type == "cuda")
    if on:
        import torch._dynamo
        import torch._inductor.config
        if not torch._inductor.config.fallback_random:
            torch._inductor.config.fallback_random = True
            if torch.torch_version.TorchVersion(torch.__version__) < "2.14":
                # Before the fixes of pytorch/pytorch#176842 and #181136 (in 2.14, not in 2.11) the
                # locality pass moves random ops past each other, so the same numbers land on other
                # ops: with torch 2.11 the flip drew what eager's crop draws. Keep program order.
                torch._inductor.config.reorder_for_locality = False
            # Graphs compiled before in this process drew with inductor's own RNG, and Dynamo's
            # guards do not look at inductor's settings: drop them, so none is reused.
            torch._dynamo.reset()
    return on


def wrap_model(model, args, device, world_size=1):
    """The module the loop calls: DistributedDataParallel under torchrun, compiled on CUDA."""
    net = model
    if world_size > 1:
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # swaps modules, keeps the parameters
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if compiles(args, device):
        # Static shapes: the device path drops the last partial batch and pads evaluation's. With
        # --compile step the training step compiles the raw model itself; this one serves evaluation.
        mode = args.compile if args.compile in ("reduce-overhead", "max-autotune") else None
        net = torch.compile(net, dynamic=False, mode=mode)
    return net


