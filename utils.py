"""Small shared pieces: the name registry, the user-error type, seeding, devices and
crash-safe file writes.

Everything a run writes goes through `atomic_save` / `atomic_write_text`, so a kill at any
moment leaves either the previous file or the new one on disk, never half of one.
"""
import errno
import importlib
import json
import os
import random
import sys
import tempfile

import numpy as np
import torch


class UserError(Exception):
    """Bad input from the user: printed as one line, the command exits with `code`."""

    code = 2


def run_command(main, args, interrupted=None, disk_note=""):
    """main(args) as a command's exit status: a UserError or OSError (disk full, permissions)
    becomes one line on stderr instead of a traceback; Ctrl-C prints `interrupted`."""
    try:
        main(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except OSError as e:
        print(f"error: {e.strerror or e} ({e.filename or 'file system'}){disk_note}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(interrupted, file=sys.stderr)
        return 130
    return 0


class Registry:
    """Maps names to builders, so the trainer never needs an if/elif ladder.

    `build(name, ...)` fails with a UserError that lists the valid names.
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name, fn=None):
        if fn is None:  # used as a decorator
            return lambda f: self.register(name, f)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = fn
        return fn

    def update(self, table):
        for name, fn in table.items():
            self.register(name, fn)

    def get(self, name):
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}")
        return self._entries[name]

    def build(self, name, *args, **kwargs):
        return self.get(name)(*args, **kwargs)

    def names(self):
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries


class LazyRegistry(Registry):
    """A Registry filled by importing `modules` (each registers its entries) on first read, so that
    importing the registry costs nothing and the modules can import it without a cycle."""

    def __init__(self, kind, modules):
        super().__init__(kind)
        self.modules, self._loaded = tuple(modules), False

    def _load(self):
        if not self._loaded:
            self._loaded = True  # set first: the modules register while being imported
            for module in self.modules:
                importlib.import_module(module)

    def get(self, name):
        self._load()
        return super().get(name)

    def names(self):
        self._load()
        return super().names()

    def __contains__(self, name):
        self._load()
        return super().__contains__(name)

    def __iter__(self):
        return iter(self.names())

    def __len__(self):
        return len(self.names())


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state():
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def pick_device(name="auto"):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA GPU is visible")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps asked for, but MPS is not available")
    return torch.device(name)


TEMP_PREFIX = ".tmp-"  # what a write killed half way leaves behind; main.py removes such files


def _atomic_write(path, write):
    """Write to a temp file in the same folder, fsync, then rename over `path`.

    rename is atomic on POSIX, so readers (and a restarted run) see the old or the new file.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=os.path.basename(path))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # name the file the user knows, not the temp file it was written as
            raise OSError(e.errno, e.strerror or str(e), path) from e
        raise


def atomic_save(obj, path):
    _atomic_write(path, lambda f: _torch_save(obj, f, path))


def _torch_save(obj, f, path):
    # On a full disk torch's C++ writer raises a RuntimeError (a long traceback on the command
    # line); an OSError with its errno is what the command line reports in one line.
    try:
        torch.save(obj, f)
    except RuntimeError as e:
        cause = e
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause
        if "write" in str(e).lower():
            raise OSError(errno.EIO, f"writing failed ({str(e).splitlines()[0][:200]})", path) from e
        raise


def atomic_write_text(text, path):
    _atomic_write(path, lambda f: f.write(text.encode()))


def write_json(obj, path):
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def load_checkpoint(path, map_location="cpu"):
    """torch.load with a one-line UserError for missing, truncated, foreign or unsafe files.

    weights_only=True: a .pth from someone else is a pickle, and a pickle can run any code
    when loaded. Only tensors, plain Python values (a tuple is how Python's `random` state is
    saved) and these NumPy types are unpickled: arrays and scalars of plain numeric dtypes, for
    NumPy's RNG state (a uint32 array) and NumPy numbers in a history or a foreign state dict.
    They call nothing but NumPy's own constructors, and the object dtype, which could hold
    anything, is not among them. A file that needs anything else is refused, naming what it holds.
    """
    import pickle
    import re
    import warnings

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    dtypes = [type(np.dtype(t)) for t in (np.bool_, np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32,
                                          np.int64, np.uint64, np.float16, np.float32, np.float64)]
    safe = [np.ndarray, np.dtype, *dtypes, multiarray._reconstruct, multiarray.scalar]
    # Pickles written under numpy 1.x name the module numpy.core.multiarray.
    aliases = [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
               (multiarray.scalar, "numpy.core.multiarray.scalar")]

    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(safe + aliases), warnings.catch_warnings():
            # "Detected pickle protocol N": noise for files torch.save did not write; they fail or load.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        try:  # every type the file names that is not allowed (zip files, what torch.save writes)
            allowed = {f"{g.__module__}.{g.__qualname__}" for g in safe} | {name for _, name in aliases}
            unsafe = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
        except Exception:
            unsafe = []
        unsafe = unsafe or re.findall(r"GLOBAL ([\w.]+)", str(e)) or re.findall(r"but got <class '([\w.]+)'>", str(e))
        if unsafe:
            raise UserError(f"refusing to load {path}: it holds {', '.join(sorted(set(unsafe))[:3])}, which unpickling "
                            f"could run as code; if you trust the file, load it with torch.load(PATH, "
                            f"weights_only=False) and torch.save only its state dict") from None
        detail = str(e).partition("WeightsUnpickler error:")[2].strip().splitlines()
        raise UserError(f"cannot read checkpoint {path}: not a file torch.save wrote"
                        + (f" ({detail[0].strip()})" if detail else "")) from None
    except Exception as e:  # torch raises many types for bad files
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'corrupt file'}")
    return obj


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())
