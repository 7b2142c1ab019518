"""One training run, as main.py starts it: data, model and loss from the flags (build.py),
then a plain loop of `train_one_epoch` / `evaluate` (engine.py) with checkpoints
(checkpoint.py), and the final reports. `--eval-only` evaluates saved weights instead.
"""
import copy
import math
import os
import shutil
import sys
import tempfile
import time

import torch
import torch.distributed as dist

import protocol
from build import (adopt_run_config, amp_setup, build_training, check, init_distributed, load_data, make_comet,
                   make_fused_step, make_model, resolve_args, wrap_model)
from checkpoint import (CHECKPOINT, CheckpointPolicy, Interrupted, claim_output_dir, load_for_resume, load_weights,
                        save_checkpoint)
from criterions import CRITERIONS
from data import MODEL_KEYS, check_fingerprint, epoch_seed, fingerprint
from engine import NonFiniteLoss, evaluate, train_one_epoch
from evaluation import classification_report, ensemble, predict_logits
from loggers import CSVLogger, NullLogger
from utils import UserError, atomic_save, count_parameters, seed_everything, write_json

def _class_names(args, data):
    # --num-classes may give the model more outputs than the dataset has classes.
    return data.classes + [f"unused_{i}" for i in range(len(data.classes), args.num_classes)]


def _tta(args):
    """Flip TTA only for runs that trained with flips (digits, --no-hflip: flipping hurts);
    train() says so once when it skips a --tta."""
    return args.tta and bool(args.hflip)


def _plots():
    """plot.py, or None with one warning where matplotlib is missing (it is optional: a run's
    weights, CSV and report.json need no picture)."""
    try:
        import plot  # matplotlib: imported where it is used
        return plot
    except ImportError as e:
        print(f"warning: no pictures are drawn ({e}; pip install matplotlib)", file=sys.stderr)
        return None


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
        plot = _plots()
        if plot is not None:
            plot.plot_confusion(report["confusion"], report["classes"], os.path.join(args.output_dir, "confusion.png"))
    return report


def test_report(args, model, data, device, amp_dtype, criterion):
    """The test set's report with these weights: accuracy, top-5, macro-F1, per class, confusion, loss."""
    logits = predict_logits(model, data.test_x, data.mean, data.std, args.input_size, device, args.eval_batch_size,
                            tta=_tta(args), amp_dtype=amp_dtype)
    report = classification_report(logits, data.test_y, _class_names(args, data))
    report["test_loss"] = criterion(logits, data.test_y).item()
    return report


def final_evaluation(args, model, data, device, amp_dtype, criterion, out_dir, comet, report=None):
    """The test set, once, with the final weights: report.json, confusion.png, curves.png.
    `report`: the last epoch's test_report, when its evaluation already was this one."""
    report = report or test_report(args, model, data, device, amp_dtype, criterion)
    write_json(report, os.path.join(out_dir, "report.json"))
    plot = _plots()
    plots = [] if plot is None else [
        ("confusion_matrix", lambda: plot.plot_confusion(report["confusion"], report["classes"],
                                                         os.path.join(out_dir, "confusion.png"))),
        ("curves", lambda: plot.plot_run(out_dir))]
    for name, draw in plots:
        try:  # a picture must not cost the run its report: the weights and report.json are written
            comet.log_image(draw(), name)
        except Exception as e:
            print(f"warning: could not draw {name} ({type(e).__name__}: {str(e).splitlines()[0][:120]})",
                  file=sys.stderr)
    comet.log_metrics({"final_test_acc": report["accuracy"], "final_test_loss": report["test_loss"],
                       "final_macro_f1": report["macro_f1"]}, epoch=args.max_epochs)
    return report


def _row_of(report, n, seconds):
    """The metrics.csv columns of a test_report of n images that took `seconds`."""
    return {"test_loss": report["test_loss"], "test_acc": report["accuracy"], "test_top5": report["top5"],
            "eval_seconds": seconds, "eval_images_per_second": n / seconds if seconds > 0 else math.nan,
            "test_images": n}


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
    crop = (f"timm random-resized crop, scale {args.rrc_scale[0]:g}-{args.rrc_scale[1]:g}" if args.crop == "timm_rrc"
            else f"crop pad {args.crop_padding}" if args.crop_padding else "no crop")
    parts = [crop, "flip" if args.hflip else "no flip"]
    if args.policy != "none":
        parts.append(args.policy + (f" ({args.aa_policy}, {args.aa_ops} ops)" if args.policy == "autoaugment" else ""))
    parts += [name for name in ("rcpaste", "mixup", "cutmix") if getattr(args, name)]
    parts += [f"cutout {args.cutout}"] * bool(args.cutout) + [f"erasing {args.random_erasing}"] * bool(args.random_erasing)
    return f"augmented training images ({args.input_path} path; mixing is per batch, not shown): " + ", ".join(parts)


def train(args, epoch_callbacks=()):
    """Train (or evaluate) as the flags say. `epoch_callbacks`: fn(epoch, row) after each epoch
    (sweep.py reports to Optuna through one)."""
    args.output_dir_given = args.output_dir is not None
    if args.eval_only and args.weights:
        adopt_run_config(args)
    resolve_args(args)
    if args.tta and not args.hflip:
        print("note: --tta skipped: this run trained without horizontal flips", file=sys.stderr)
    if args.folds or args.seeds:
        return protocol.run(args, train)
    rank, world_size, device = init_distributed(args)
    args.device_type = device.type
    is_main = rank == 0
    check(world_size == 1 or not args.skip_nonfinite, "--skip-nonfinite is not supported with several processes")
    torch.backends.cudnn.benchmark = not args.off_benchmark
    seed_everything(args.seed)

    data = load_data(args)
    if args.num_classes is None:
        args.num_classes = len(data.classes)
    max_label = int(max(data.train_y.max(), data.test_y.max()))
    check(args.num_classes > max_label, f"--num-classes {args.num_classes} is too small: the labels go up to {max_label}")
    model = make_model(args, data.in_chans)
    check(not args.label_smoothing or args.num_classes >= 2,
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
        check(os.path.isfile(resume_path), f"--resume: no checkpoint at {resume_path}")
    elif is_main and not args.dry_run and os.path.exists(ckpt_path):
        raise UserError(f"{out_dir} already holds a run; add --resume to continue it, or choose another --output-dir")
    with claim_output_dir(out_dir, enabled=is_main and not args.dry_run):
        return _train(args, data, model, device, criterion, out_dir, ckpt_path, resume_path, rank, world_size,
                      epoch_callbacks)


def _train(args, data, model, device, criterion, out_dir, ckpt_path, resume_path, rank, world_size, epoch_callbacks):
    """The training loop of train(), in a claimed output folder."""
    is_main = rank == 0
    data_fp = fingerprint(data, args.data_dir, args.dataset)  # what --resume and --eval-only check against
    run = build_training(args, data, model, device, rank, world_size)
    model, optimizer, scheduler, scaler, ema = run.model, run.optimizer, run.scheduler, run.scaler, run.ema

    start_epoch, history = 0, []
    if resume_path:
        start_epoch, history = load_for_resume(resume_path, args, data_fp, model=model, optimizer=optimizer,
                                               scheduler=scheduler, scaler=scaler, ema=ema)

    net = wrap_model(model, args, device, world_size)
    # --compile step compiles the raw model inside its step; graphs captures the compiled one.
    fused = make_fused_step(args, run, model if args.compile == "step" else net, criterion, device)

    csv_log = CSVLogger(os.path.join(out_dir, "metrics.csv"))
    comet = make_comet(args) if is_main else NullLogger()
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
    final_report = None  # the last epoch's test report, when the final report can be it
    checkpointed = start_epoch  # epochs done in the checkpoint on disk
    try:
        for epoch in epochs:
            seed_everything(epoch_seed(args.seed, epoch))  # each epoch's draws depend on (seed, epoch) only
            start = time.perf_counter()
            if args.mixup_off_epoch and epoch >= args.mixup_off_epoch and run.mixer is not None:
                run.mixer = None  # timm's --mixup-off-epoch: no mixing from here on
                fused = make_fused_step(args, run, model if args.compile == "step" else net, criterion, device)
            try:
                train = train_one_epoch(net, run.train_loader, criterion, optimizer, scheduler, device, epoch,
                                        amp_dtype=run.amp_dtype, scaler=scaler, mixer=run.mixer, grad_clip=args.grad_clip,
                                        ema=ema, skip_nonfinite=args.skip_nonfinite, max_steps=max_steps,
                                        log_interval=args.log_interval, progress=bars, fused=fused)
            except NonFiniteLoss as e:
                raise UserError(str(e))
            reuse = (epoch + 1 == args.max_epochs and world_size == 1 and data.val_y is None and not args.dry_run
                     and not _tta(args))
            if reuse:  # the last epoch's test pass is the final report's: computed once, used twice
                eval_start = time.perf_counter()
                final_report = test_report(args, ema.module if ema is not None else model, data, device,
                                           run.amp_dtype, criterion)
                test = _row_of(final_report, len(data.test_y), time.perf_counter() - eval_start)
            elif (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.max_epochs or args.dry_run:
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
                        save_checkpoint(ckpt_path, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                        ema=ema, epoch=epoch, history=history, args=args, data_fingerprint=data_fp)
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
        report = final_evaluation(args, final, data, device, run.amp_dtype, criterion, out_dir, comet,
                                  report=final_report)
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


