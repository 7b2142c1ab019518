"""Hyperparameter search over main.py's flags with Optuna, resumable from its SQLite storage.

    python sweep.py --study vit_lr --storage sqlite:///sweep.db --trials 20 --pruner median \\
        --param lr=loguniform:1e-4:1e-2 --param dropout=uniform:0:0.3 --param batch-size=choice:64,128 \\
        -- --dataset c10 --max-epochs 50 --no-progress

Each trial runs train.train() (what main.py runs) in this process with the flags after `--` plus its sampled ones,
writing into OUT_DIR/trial_NNNN. Every finished epoch's metric (val_acc with --val-split, which
keeps the test set out of the search; test_acc without) goes to Optuna through the callback
sweep.py hands to train.train(args, epoch_callbacks=...), so the pruner can stop a poor trial
early. A trial that fails with a user error is one line ("trial 3 failed: ..."); when no trial
of this invocation succeeds, the sweep ends with one error line and exit status 2. Running the same command
again continues the study (--trials more trials). The best trial's parameters are printed and
written, with the main.py command line that reproduces it, to OUT_DIR/best.json.

--param kinds: uniform:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH, choice:A,B,... (an on/off
flag such as mixup takes choice:true,false).
"""
import argparse
import contextlib
import io
import os
import sys

from utils import UserError, run_command, write_json

KINDS = ("uniform", "loguniform", "int", "choice")
METRICS = {"acc": "maximize", "top5": "maximize", "loss": "minimize"}
TRUE = {"1", "true", "yes", "on"}


def parse_param(text):
    """'lr=loguniform:1e-4:1e-2' -> ('lr', 'loguniform', [0.0001, 0.01])."""
    name, _, spec = text.partition("=")
    kind, _, rest = spec.partition(":")
    name = name.strip().lstrip("-").replace("_", "-")
    if not name or kind not in KINDS or not rest:
        raise UserError(f"--param {text!r}: expected NAME=KIND:VALUES with KIND one of {', '.join(KINDS)}")
    if kind == "choice":
        return name, kind, [_number(v) for v in rest.split(",")]
    try:
        low, high = (int(v) if kind == "int" else float(v) for v in rest.split(":"))
    except ValueError:
        raise UserError(f"--param {text!r}: expected {kind}:LOW:HIGH with numbers")
    if not low < high or (kind == "loguniform" and low <= 0):
        raise UserError(f"--param {text!r}: need LOW < HIGH" + (" and LOW > 0" if kind == "loguniform" else ""))
    return name, kind, [low, high]


def _number(value):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value.strip()


def _main_flags():
    from flags import get_args_parser
    # argparse keeps no public table of its options; _actions is stable across Python versions.
    return {opt: a for a in get_args_parser()._actions for opt in a.option_strings}


def parse_main_args(argv):
    """main.py's Namespace for argv; a bad flag becomes a UserError carrying argparse's message."""
    from flags import get_args_parser
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return get_args_parser().parse_args(argv)
    except SystemExit:
        raise UserError(f"main.py flags {' '.join(argv)}: {err.getvalue().strip().rpartition('error: ')[2]}")


def trial_argv(base, params, flags):
    """main.py's argv: the fixed flags, then the sampled ones (later flags win in argparse)."""
    argv = list(base)
    for name, value in params.items():
        flag = "--" + name
        if flags[flag].nargs == 0:  # an on/off flag: present or absent
            argv += [flag] if str(value).lower() in TRUE else []
        elif flags[flag].nargs in ("+", "*"):
            argv += [flag, *str(value).split()]
        else:
            argv += [flag, str(value)]
    return argv


def objective(trial, args, specs, flags):
    from train import train
    params = {}
    for name, kind, values in specs:
        if kind == "choice":
            params[name] = trial.suggest_categorical(name, values)
        elif kind == "int":
            params[name] = trial.suggest_int(name, *values)
        else:
            params[name] = trial.suggest_float(name, *values, log=kind == "loguniform")
    out = os.path.join(args.out_dir, f"trial_{trial.number:04d}")
    argv = trial_argv(args.train_args, params, flags) + ["--output-dir", out]
    trial.set_user_attr("argv", argv)
    trial.set_user_attr("output_dir", out)

    def report(epoch, row):
        import optuna
        trial.report(metric_of(row, args.metric), step=int(row.get("epoch", epoch)))
        if trial.should_prune():  # raised through train.train, which leaves the last checkpoint behind
            raise optuna.TrialPruned()

    history = train(parse_main_args(argv), epoch_callbacks=(report,))
    if not history:
        raise UserError("the trial trained no epoch")
    return metric_of(history[-1], args.metric)


def metric_of(row, metric):
    """The held-out split's value when the run has one (--val-split), else the test set's."""
    return float(row[f"val_{metric}"] if f"val_{metric}" in row else row[f"test_{metric}"])


def build_pruner(name):
    import optuna
    if name == "median":  # compare only after a few trials and a first epoch exist
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto", reduction_factor=3)
    return optuna.pruners.NopPruner()


def get_args_parser():
    p = argparse.ArgumentParser(description="Optuna search over main.py flags; main.py's flags follow `--`.",
                                usage="%(prog)s --study NAME [options] --param NAME=KIND:VALUES ... -- MAIN_FLAGS ...")
    p.add_argument("--study", required=True, help="study name (also names the default --out-dir)")
    p.add_argument("--storage", default="sqlite:///sweep.db", help="Optuna storage URL; the study resumes from it")
    p.add_argument("--trials", type=int, default=10, help="trials to run now (added to those already stored)")
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    p.add_argument("--param", action="append", default=[], metavar="NAME=KIND:VALUES",
                   help="a main.py flag to search; KIND: uniform:LOW:HIGH, loguniform:LOW:HIGH, int:LOW:HIGH, choice:A,B")
    p.add_argument("--metric", default="acc", choices=sorted(METRICS),
                   help="the last epoch's val_METRIC (with --val-split, which keeps the test set out of the "
                        "search) or else test_METRIC is the objective")
    p.add_argument("--out-dir", default=None, help="trial folders and best.json (default: sweeps/<study>)")
    p.add_argument("--seed", type=int, default=None, help="sampler seed")
    p.set_defaults(train_args=[])  # filled by parse_args from what follows `--`
    return p


def parse_args(argv=None):
    """Splits argv at the first `--`: sweep flags before it, main.py flags after."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = get_args_parser().parse_args(argv[:split])
    args.train_args = argv[split + 1:]
    return args


def main(args):
    import optuna

    if args.trials <= 0:
        raise UserError(f"--trials must be positive, got {args.trials}")
    if not args.param:
        raise UserError("nothing to search: add --param NAME=KIND:VALUES")
    flags = _main_flags()
    specs = [parse_param(p) for p in args.param]
    for name, _, _ in specs:
        if "--" + name not in flags:
            raise UserError(f"--param {name}: main.py has no flag --{name}")
    for flag in ("--output-dir", "--resume", "--eval-only", "--weights", "--dry-run", "--folds", "--seeds"):
        if any(a == flag or a.startswith(flag + "=") for a in args.train_args):
            raise UserError(f"{flag} does not go with a sweep: each trial is one run in its own folder")
    parse_main_args(args.train_args)  # a typo fails here, not in every trial
    args.out_dir = args.out_dir or os.path.join("sweeps", args.study)

    # Optuna's log: a line on creating the study and, per failed trial, its whole traceback;
    # the lines printed below replace it.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return _run_study(args, specs, flags, optuna)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _run_study(args, specs, flags, optuna):
    try:
        study = optuna.create_study(study_name=args.study, storage=args.storage, load_if_exists=True,
                                    direction=METRICS[args.metric], pruner=build_pruner(args.pruner))
    except Exception as e:  # SQLAlchemy and Optuna raise many types for bad URLs and unreachable files
        raise UserError(f"--storage {args.storage}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}")
    direction = study.direction.name.lower()
    if direction != METRICS[args.metric]:  # load_if_exists keeps the stored direction, whatever we ask
        raise UserError(f"study {args.study} in {args.storage} was created to {direction}; --metric {args.metric} "
                        f"would {METRICS[args.metric]}")
    if study.trials:
        print(f"continuing study {args.study} ({len(study.trials)} trials stored in {args.storage})", flush=True)
    # Offset by the trials already stored, so a resumed seeded sweep does not redraw the same points.
    study.sampler = optuna.samplers.TPESampler(seed=None if args.seed is None else args.seed + len(study.trials))
    # A trial that fails (bad sampled combination, diverging loss, out of GPU memory) is
    # recorded as failed, in one line, and the sweep goes on. Anything else (a bug, Ctrl-C)
    # stops it; the stored trials stay.
    outcomes = {"complete": 0, "pruned": 0, "fail": []}

    def one_line(study, trial):
        if trial.state == optuna.trial.TrialState.FAIL:
            error = trial.user_attrs.get("error", "unknown error")
            outcomes["fail"].append(error)
            print(f"trial {trial.number} failed: {error}", file=sys.stderr, flush=True)
        elif trial.state == optuna.trial.TrialState.PRUNED:
            outcomes["pruned"] += 1
            print(f"trial {trial.number} pruned at epoch {trial.last_step}", flush=True)
        elif trial.state == optuna.trial.TrialState.COMPLETE:
            outcomes["complete"] += 1
            print(f"trial {trial.number}: {args.metric} {trial.value:.4f} with "
                  + ", ".join(f"{k}={v}" for k, v in trial.params.items()), flush=True)

    def run_trial(trial):
        import torch
        try:
            return objective(trial, args, specs, flags)
        except UserError as e:
            trial.set_user_attr("error", str(e))
            raise
        except torch.OutOfMemoryError as e:  # a sampled batch size or width too large for the device
            torch.cuda.empty_cache()
            trial.set_user_attr("error", f"out of memory: {(str(e).splitlines() or [''])[0]}")
            raise UserError(trial.user_attrs["error"])

    study.optimize(run_trial, n_trials=args.trials, catch=(UserError,), callbacks=[one_line])
    failed = outcomes["fail"]
    if failed and not outcomes["complete"]:  # (pruned trials alone are the pruner at work, not failures)
        raise UserError(f"no trial finished: {len(failed)} of {args.trials} failed, {outcomes['pruned']} pruned "
                        f"(the first: {failed[0]})")

    states = {}
    for t in study.trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    try:
        best = study.best_trial
    except ValueError:
        raise UserError(f"no trial of study {args.study} has finished ({states})")
    result = {"study": args.study, "storage": args.storage, "metric": args.metric, "direction": METRICS[args.metric],
              "best_trial": best.number, "best_value": best.value, "best_params": best.params,
              "main_argv": best.user_attrs.get("argv"), "output_dir": best.user_attrs.get("output_dir"),
              "trials": states}
    path = os.path.join(args.out_dir, "best.json")
    write_json(result, path)
    print(f"best trial {best.number}: {args.metric} {best.value:.4f} with "
          + ", ".join(f"{k}={v}" for k, v in best.params.items()) + f"; written to {path}")
    return result


def cli(argv=None):
    args = parse_args(argv)
    return run_command(main, args, interrupted=f"interrupted; finished trials are stored in {args.storage} "
                                               "(the same command continues the study)")


if __name__ == "__main__":
    sys.exit(cli())
