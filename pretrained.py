"""Transfer learning: a pretrained timm or torchvision backbone with a new classification head.

    model, input_size = build_pretrained("timm/vit_small_patch16_224", 10, 3, weights="vit_s.pth")
    model, input_size = build_pretrained("tv/resnet18", 100, 3, weights="hub")

Names are `timm/<timm model name>` or `tv/<torchvision model name>`. `weights` is None (random
initialisation), "hub" (download the library's default pretrained weights; needs the
internet) or the path of a state dict saved from the same architecture, whatever its head
size or input channels. The head is replaced by a fresh one with num_classes outputs; an
input layer of another channel count is adapted (timm's adapt_input_conv: summed for
grayscale). `input_size` is the side the backbone was trained at (224 for most): resize
CIFAR images up to it (--image-size), since many backbones (all ViTs) accept no other.

Offline, "hub" fails within seconds (one connection attempt, then only the local caches of
huggingface_hub and torch.hub are looked at) instead of retrying for a minute, and the error
names the way out: --pretrained PATH.
"""
import contextlib
import logging
import os
import socket
from urllib.parse import urlparse

import torch
import torch.nn as nn

from utils import UserError, load_checkpoint

DEFAULT_CLASSES = 1000  # every torchvision classifier's default head is ImageNet's


def _parent(model, name):
    parent, _, attr = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), attr


def _replace(model, name, module):
    parent, attr = _parent(model, name)
    setattr(parent, attr, module)


def _read_state(path):
    state = load_checkpoint(path)
    for key in ("state_dict", "model"):  # plain state dicts, or training checkpoints holding one
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path} holds no state dict")
    return {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}


def load_backbone(model, state, head_names, first_conv, source):
    """Load every tensor of `state` except the head's, adapting the first conv's input channels."""
    from timm.models import adapt_input_conv

    state = {k: v for k, v in state.items() if not any(k.startswith(h + ".") for h in head_names)}
    key = first_conv + ".weight"
    expected = model.state_dict()[key].shape[1] if key in model.state_dict() else None
    if key in state and expected is not None and state[key].shape[1] != expected:
        if state[key].ndim != 4 or state[key].shape[1] != 3:  # adapt_input_conv starts from RGB only
            raise UserError(f"{source}: cannot adapt its {tuple(state[key].shape)} input layer {first_conv} "
                            f"to {expected} channels")
        state[key] = adapt_input_conv(expected, state[key])
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # size mismatches: another architecture
        lines = [line.strip() for line in str(e).splitlines() if "size mismatch" in line]
        raise UserError(f"{source} does not fit this architecture: {lines[0] if lines else str(e).splitlines()[0]}")
    missing = [k for k in missing if not any(k.startswith(h + ".") for h in head_names)]
    if missing or unexpected:
        raise UserError(f"{source} does not fit this architecture: "
                        + (f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}")
                        + (" ..." if len(missing) + len(unexpected) > 3 else ""))


def _reachable(url, timeout=3.0):
    """Whether a TCP connection to url's host opens within `timeout` seconds (True behind a
    proxy, which we cannot test this way: the download then decides)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
            return True
    except OSError:  # name not resolved, refused, timed out
        return False


@contextlib.contextmanager
def _hub_offline():
    """huggingface_hub in offline mode: files come from its cache or fail at once, where online
    it retries each request five times with back-off (about a minute, 22 log lines)."""
    from huggingface_hub import constants
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # read at each request (is_offline_mode), not only at import
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _offline_help(what, arch):
    return (f"offline, pass --pretrained PATH, a state dict saved from {what}({arch!r}) "
            f"(e.g. torch.save(model.state_dict(), PATH) where it is online)")


def _timm(arch, num_classes, in_chans, weights):
    import timm

    if not timm.is_model(arch):
        raise UserError(f"unknown timm model {arch!r} (see timm.list_models())")
    if weights == "hub":
        from huggingface_hub import constants
        online = _reachable(constants.ENDPOINT)
        hub_log = logging.getLogger("huggingface_hub")
        level = hub_log.level
        try:
            with contextlib.ExitStack() as stack:
                if not online:
                    stack.enter_context(_hub_offline())
                hub_log.setLevel(logging.ERROR)  # its retry warnings; the error below says it all
                model = timm.create_model(arch, pretrained=True, num_classes=num_classes, in_chans=in_chans)
        except Exception as e:  # offline: huggingface_hub / urllib errors of many types
            where = "" if online else f" ({urlparse(constants.ENDPOINT).hostname} cannot be reached)"
            raise UserError(f"--pretrained hub: cannot download the weights of timm/{arch}{where}: "
                            f"{type(e).__name__}; " + _offline_help("timm.create_model", arch))
        finally:
            hub_log.setLevel(level)
    else:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans)
        if weights is not None:
            cfg = model.pretrained_cfg
            heads = cfg.get("classifier") or ()
            load_backbone(model, _read_state(weights), (heads,) if isinstance(heads, str) else tuple(heads),
                          cfg.get("first_conv") or "", weights)
    size = model.pretrained_cfg.get("input_size", (in_chans, 224, 224))[-1]
    return model, size


def _torchvision(arch, num_classes, in_chans, weights):
    import torchvision

    if arch not in torchvision.models.list_models():
        raise UserError(f"unknown torchvision model {arch!r} (see torchvision.models.list_models())")
    if weights == "hub":
        try:
            model = torchvision.models.get_model(arch, weights="DEFAULT")
        except Exception as e:  # torch.hub tries once (after its cache), so no connection check is needed
            raise UserError(f"--pretrained hub: cannot download the weights of tv/{arch}: {type(e).__name__}; "
                            + _offline_help("torchvision.models.get_model", arch))
        state, source = model.state_dict(), f"tv/{arch} weights"
    else:
        model = torchvision.models.get_model(arch, weights=None)
        state, source = (_read_state(weights), weights) if weights is not None else (None, None)
    modules = list(model.named_modules())
    # The head: the last layer with ImageNet's 1000 outputs (a Linear; squeezenet's is a 1x1 conv).
    heads = [(n, m) for n, m in modules if (isinstance(m, nn.Linear) and m.out_features == DEFAULT_CLASSES)
             or (isinstance(m, nn.Conv2d) and m.out_channels == DEFAULT_CLASSES)]
    if not heads:
        raise UserError(f"tv/{arch} has no {DEFAULT_CLASSES}-way classification layer to replace")
    head_name, head = heads[-1]
    _replace(model, head_name, nn.Linear(head.in_features, num_classes) if isinstance(head, nn.Linear)
             else nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride))
    conv_name, conv = next((n, m) for n, m in modules if isinstance(m, nn.Conv2d))
    if conv.in_channels != in_chans:
        _replace(model, conv_name, nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                             conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode))
    if state is not None:
        load_backbone(model, state, (head_name,), conv_name, source)
    size = getattr(model, "image_size", None)  # torchvision's ViTs take exactly this side
    if size is None:
        try:
            size = torchvision.models.get_model_weights(arch).DEFAULT.transforms().crop_size[0]
        except Exception:  # a model without published weights
            size = 224
    return model, size


def build_pretrained(name, num_classes, in_chans, weights=None):
    """(model, input size) for `timm/<name>` or `tv/<name>`; see the module docstring."""
    family, _, arch = name.partition("/")
    builders = {"timm": _timm, "tv": _torchvision}
    if family not in builders or not arch:
        raise UserError(f"pretrained model names look like timm/<name> or tv/<name>, got {name!r}")
    if weights not in (None, "hub") and not isinstance(weights, str):
        raise UserError(f"weights must be None, 'hub' or a file path, got {weights!r}")
    return builders[family](arch, num_classes, in_chans, weights)
