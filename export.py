"""Export a trained run to ONNX or TorchScript, and check the export against PyTorch.

    python export.py --run runs/vit_c10 --format onnx          # runs/vit_c10/model.onnx
    python export.py --run runs/vit_c10 --format torchscript   # runs/vit_c10/model.torchscript.pt

The exported model takes normalised float images (N, C, S, S), any batch size, and returns
logits. What a caller needs to prepare its input travels inside the file: mean, std, image_size,
input_size (the side it takes), in_chans and classes (ONNX metadata_props, each value JSON; TorchScript extra
file meta.json). The export is checked on random inputs at batch sizes 1 and 3; a
difference above 1e-4 times the logit scale fails with exit status 1. --opset must lie in the
range the installed TorchScript-based ONNX exporter supports (opset_range()); every failure is
one line.
"""
import argparse
import contextlib
import json
import os
import sys
import tempfile
import warnings

import torch

from evaluation import load_run
from utils import UserError, run_command

TOLERANCE = 1e-4
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


class ExportError(UserError):
    """The model could not be exported, or the export computes something else (exit status 1)."""

    code = 1


def metadata(config):
    keys = ("model_name", "image_size", "input_size", "in_chans", "num_classes", "mean", "std", "classes")
    meta = {k: config[k] for k in keys}
    meta["input"] = "float32 (N, in_chans, input_size, input_size): (pixel / 255 - mean) / std"
    return meta


def opset_range():
    """(lowest, highest) ONNX opset of torch's TorchScript-based exporter (the one used here)."""
    try:
        from torch.onnx import _constants  # private, but the only place torch states its range
        return _constants.ONNX_MIN_OPSET, _constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    except (ImportError, AttributeError):
        return 7, 20  # torch 2.x's values


def check_opset(opset):
    low, high = opset_range()
    if not low <= opset <= high:
        raise UserError(f"--opset {opset} is outside what this torch's ONNX exporter writes ({low} to {high})")


@contextlib.contextmanager
def _quiet_output():
    """Send file descriptors 1 and 2 to a scratch file for the duration.

    On a failure torch's exporter prints the whole TorchScript graph (over 100 lines) from C++,
    past sys.stdout, before raising; the one-line error that follows says what is needed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def export_onnx(model, example, path, meta, opset=17):
    import onnx
    check_opset(opset)
    # Tracer and deprecation warnings are noise for the user here.
    with warnings.catch_warnings(), _quiet_output():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: it needs no onnxscript and handles every model here.
        torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(path)
    onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in meta.items()})
    onnx.save(proto, path)


def run_onnx(path):
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def read_onnx_metadata(path):
    import onnx
    return {p.key: json.loads(p.value) for p in onnx.load(path).metadata_props}


def export_torchscript(model, example, path, meta):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, path, _extra_files={"meta.json": json.dumps(meta)})


def load_torchscript(path):
    """(module, metadata) of an exported TorchScript file."""
    extra = {"meta.json": ""}
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, still works
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["meta.json"] or "{}")


def verify(model, run, shape, batch_sizes=(1, 3), seed=0):
    """Max abs difference between PyTorch and the exported model on random inputs; raises above tolerance."""
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for b in batch_sizes:
        x = torch.randn(b, *shape, generator=g)
        with torch.no_grad():
            expected = model(x).float()
        got = run(x).float()
        if got.shape != expected.shape:
            raise ExportError(f"the export returns shape {tuple(got.shape)} at batch size {b}, expected {tuple(expected.shape)}")
        diff = (got - expected).abs().max().item()
        limit = TOLERANCE * max(1.0, expected.abs().max().item())
        if not diff <= limit:  # `not <=` also catches NaN
            raise ExportError(f"the export differs from PyTorch by {diff:.3g} at batch size {b} (tolerance {limit:.3g})")
        worst = max(worst, diff)
    return worst


def export(run, fmt, out=None, opset=17):
    """Export the run's model on the CPU; returns (path, max abs difference)."""
    if fmt not in SUFFIX:
        raise UserError(f"unknown format {fmt!r}; choose onnx or torchscript")
    if fmt == "onnx":
        check_opset(opset)  # before loading anything
    model, config = load_run(run, "cpu")
    if out is None:
        folder = run if os.path.isdir(run) else os.path.dirname(os.path.abspath(run))
        out = os.path.join(folder, "model" + SUFFIX[fmt])
    shape = (config["in_chans"], config["input_size"], config["input_size"])
    example = torch.randn(2, *shape)  # batch 2, not 1: a trace at batch 1 can fold the batch size in
    meta = metadata(config)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
        if fmt == "onnx":
            export_onnx(model, example, out, meta, opset)
            runner = run_onnx(out)
        else:
            export_torchscript(model, example, out, meta)
            runner = load_torchscript(out)[0]
    except Exception as e:  # exporters raise anything from RuntimeError to their own types
        raise ExportError(f"cannot export {config['model_name']} to {fmt}: {type(e).__name__}: "
                          f"{(str(e).strip().splitlines() or [''])[0]}")
    return out, verify(model, runner, shape)


def get_args_parser():
    p = argparse.ArgumentParser(description="Export a trained run to ONNX or TorchScript.")
    p.add_argument("--run", required=True, help="a run folder (or a weights file inside one)")
    p.add_argument("--format", required=True, choices=sorted(SUFFIX))
    p.add_argument("--out", default=None, help="default: model.onnx / model.torchscript.pt in the run folder")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (%d to %d with this torch)" % opset_range())
    return p


def main(args):
    out, diff = export(args.run, args.format, args.out, args.opset)
    print(f"wrote {out}; max abs difference to PyTorch {diff:.2e} at batch sizes 1 and 3")
    return out


def cli(argv=None):
    return run_command(main, get_args_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
