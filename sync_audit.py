"""Counting what would make a GPU's host wait, without a GPU.

Code runs on PyTorch's `meta` device (shapes and dtypes, no data) under a TorchDispatchMode
that sees every aten op and counts:

  ops              ops producing a device tensor: each is a kernel launch on a GPU (eager)
  syncs            host reads of device values (`.item()`, `int(t)`, `bool(t)`, `.tolist()`,
                   device-to-host copies) and ops whose output size depends on the data
                   (`nonzero`, `unique`, boolean-mask indexing): each waits for the GPU to
                   finish everything queued
  blocking_copies  host-to-device copies of host data (`torch.tensor(list, device=...)`,
                   `.to(device)` of a CPU tensor): from pageable memory such a copy waits for
                   the stream, so the host cannot run ahead of the GPU
  host_inputs      device ops given a CPU tensor (a CPU scalar tensor is passed by value and
                   costs no wait; anything larger is a hidden copy)

A host read on `meta` cannot return data, so the mode answers it with a stand-in (0, False, -1
for integers, an empty index) and counts it. bench.py --audit and the tests of augment.py,
autoaugment.py and the training step use this one counter.
"""
import collections

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

_SYNCS = {"_local_scalar_dense", "item", "nonzero", "nonzero_static", "masked_select", "unique", "_unique", "_unique2",
          "unique_consecutive", "unique_dim", "is_nonzero", "equal", "allclose"}
_COPIES = {"_to_copy", "copy_", "copy", "_copy_from", "_copy_from_and_resize"}
_INDEXING = {"index", "index_put", "index_put_", "_index_put_impl_", "_unsafe_index", "_unsafe_index_put"}


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


def _is_mask(t):
    return isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)


class SyncCounter(TorchDispatchMode):
    """Counts ops, syncs, blocking copies and host inputs of code running on `device`."""

    def __init__(self, device="meta"):
        super().__init__()
        self.device = torch.device(device).type
        self.ops = self.syncs = self.blocking_copies = self.host_inputs = 0
        self.by_op = collections.Counter()

    def counts(self):
        return {"ops": self.ops, "syncs": self.syncs, "blocking_copies": self.blocking_copies,
                "host_inputs": self.host_inputs, "by_op": dict(self.by_op)}

    def _copy(self, name, args, kwargs):
        if name == "_to_copy":
            src, dst = args[0], torch.device(kwargs.get("device") or args[0].device).type
        elif name in ("copy_", "copy"):
            src, dst = args[1], args[0].device.type
        else:  # _copy_from(src, dst)
            src, dst = args[0], args[1].device.type
        return src, dst

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        inputs = _tensors(list(args) + list(kwargs.values()))
        on_device = [t for t in inputs if t.device.type == self.device]
        meta = self.device == "meta"
        if name in _COPIES:
            src, dst = self._copy(name, args, kwargs)
            if src.device.type == self.device and dst == "cpu":
                self.syncs += 1  # a device-to-host copy: the host waits for the data
                if meta:
                    if name == "_to_copy":
                        return torch.zeros(src.shape, dtype=kwargs.get("dtype") or src.dtype)
                    return args[0]
            elif src.device.type == "cpu" and dst == self.device:
                self.blocking_copies += 1
        elif on_device and any(t.device.type == "cpu" for t in inputs):
            self.host_inputs += 1
        if name in _SYNCS and on_device:
            self.syncs += 1
            if meta and name == "_local_scalar_dense":
                t = on_device[0]
                # Any value will do; -1 for integers reads as "none" to the trainer's non-finite check.
                return False if t.dtype == torch.bool else (0.0 if t.is_floating_point() else -1)
            if meta and name == "nonzero":
                return torch.empty((0, args[0].dim()), dtype=torch.long, device=args[0].device)
        if name in _INDEXING and len(args) > 1 and any(_is_mask(t) for t in args[1] if t is not None):
            self.syncs += 1  # boolean-mask indexing finds the mask's nonzeros inside the kernel
            if meta:
                indices = []
                for t in args[1]:
                    indices += ([torch.empty(0, dtype=torch.long, device=t.device)] * t.dim()) if _is_mask(t) else [t]
                args = (args[0], indices, *args[2:])
        out = func(*args, **kwargs)
        if any(t.device.type == self.device for t in _tensors([out])):
            self.ops += 1
            self.by_op[str(func)] += 1
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


def count_ops(fn, batch_size, shape=(3, 32, 32), device="meta", dtype=torch.float32, with_labels=False,
              num_classes=10):
    """The counts of one fn(x) (or fn(x, y) with integer labels) on a (batch_size, *shape) batch
    made on `device` before counting starts, so only fn's own ops count."""
    x = torch.zeros((batch_size, *shape), device=device, dtype=dtype)
    y = torch.zeros(batch_size, device=device, dtype=torch.long) if with_labels else None
    return count(fn, *((x, y) if with_labels else (x,)), device=device)[1]
