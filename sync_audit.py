"""Counting what would make a GPU's host wait, without a GPU.

Code runs on PyTorch's `meta` device (shapes and dtypes, no data) under a TorchDispatchMode
that sees every aten op and counts:

  ops              ops producing a device tensor: each is a kernel launch on a GPU (eager)
  syncs            host reads of device values (`.item()`, `int(t)`, `bool(t)`, `.tolist()`,
                   device-to-host copies): each waits for the GPU to finish everything queued
  blocking_copies  host-to-device copies of host data (`torch.tensor(list, device=...)`,
                   `.to(device)` of a CPU tensor): from pageable memory such a copy waits for
                   the stream, so the host cannot run ahead of the GPU

A host read on `meta` cannot return data, so the mode answers it with a stand-in and counts it.
bench.py --audit and the tests use this to show that the device path's step never waits.
"""
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}


def _tensors(tree):
    out = []
    for a in tree:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(_tensors(a))
        elif isinstance(a, dict):
            out.extend(_tensors(list(a.values())))
    return out


class SyncCounter(TorchDispatchMode):
    """Counts ops, syncs and blocking copies of code running on `device` (default meta)."""

    def __init__(self, device="meta"):
        super().__init__()
        self.device = torch.device(device).type
        self.ops = self.syncs = self.blocking_copies = 0
        self.names = {}

    def counts(self):
        return {"ops": self.ops, "syncs": self.syncs, "blocking_copies": self.blocking_copies}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = _tensors(list(args) + list(kwargs.values()))
        on_device = [t for t in inputs if t.device.type == self.device]
        if func is torch.ops.aten._local_scalar_dense.default and on_device:
            self.syncs += 1
            t = on_device[0]
            # Any value will do; -1 for integers reads as "none" to the trainer's non-finite check.
            return False if t.dtype == torch.bool else (0.0 if t.is_floating_point() else -1)
        if func in _COPIES:
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            dst_device = (args[0].device.type if func is torch.ops.aten.copy_.default
                          else torch.device(kwargs.get("device") or src.device).type)
            if src.device.type == self.device and dst_device == "cpu":
                self.syncs += 1  # a device-to-host copy: the host waits for the data
                if func is torch.ops.aten.copy_.default:
                    return args[0]
                return torch.zeros(src.shape, dtype=kwargs.get("dtype") or src.dtype)
            if src.device.type == "cpu" and dst_device == self.device:
                self.blocking_copies += 1
        out = func(*args, **kwargs)
        outs = _tensors([out])
        if any(t.device.type == self.device for t in outs):
            self.ops += 1
            name = str(func.overloadpacket.__name__)
            self.names[name] = self.names.get(name, 0) + 1
        return out


class _NewTensorCounter(TorchFunctionMode):
    """`torch.tensor(data, device=d)` builds the tensor on the host and copies it over below the
    dispatcher, where SyncCounter cannot see it; this catches it at the Python call."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor) and kwargs.get("device") is not None:
            if torch.device(kwargs["device"]).type == self.counter.device and not isinstance(args[0], torch.Tensor):
                self.counter.blocking_copies += 1
        return func(*args, **kwargs)


class audit:
    """Context manager: `with audit() as c: ...; c.counts()`."""

    def __init__(self, device="meta"):
        self.counter = SyncCounter(device)
        self.functions = _NewTensorCounter(self.counter)

    def __enter__(self):
        self.functions.__enter__()
        self.counter.__enter__()
        return self.counter

    def __exit__(self, *exc):
        self.counter.__exit__(*exc)
        self.functions.__exit__(*exc)


def count(fn, *args, device="meta", **kwargs):
    """(fn's result, counts) for one call of fn under the audit."""
    with audit(device) as counter:
        result = fn(*args, **kwargs)
    return result, counter.counts()
