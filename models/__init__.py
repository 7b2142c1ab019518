"""The model registry: every name `--model-name` accepts, what it is, which options it takes and
which image sizes it takes.

A family module registers each model where it is defined, timm style:

    @register_model("resnet18", 18, about="...", sizes=dict(minimum=8))
    def build_resnet(depth, /, num_classes, image_size=32, in_chans=3, *, dropout=0.0, se=False): ...

Positional arguments after the name (18) and keywords other than `about` / `sizes` are bound to
the builder (`preset="vit"`), so they pick the architecture and are not options. The builder's
remaining keyword-only parameters are exactly the options the model accepts: builders have no
**kwargs, so an option can never be silently dropped. `build_model` refuses, in one line, an
option the model does not take and names the models that do take it.

`sizes` declares the image sizes the model takes: `multiple` (an int, or the name of an option
holding it, such as "patch_size"; or a function of the options with their defaults) and `minimum`.
Each was found by trying sizes (tests/test_models.py tries one bad and one good size per model).

Nothing heavy happens at import: this module imports no model code, and the family modules
(FAMILIES: vit.py at the top level, and one module of this package per family) are imported the
first time the registry is read, which also keeps the import order free of cycles (they import
`register_model` from here).

  vit.py                     ViT-CIFAR and the DeiT sizes (vit, vit_tiny, vit_small, vit_base)
  models/layers.py           the transformer pieces the zoo shares (Attention, Block, ...)
  models/vit_variants.py     simple_vit, vit_spt_lsa, vit_dyt (and the ViT the k47 ViTs are)
  models/cait.py             cait
  models/swin.py             swin_t
  models/mixer.py            mlp_mixer, convmixer
  models/mobilevit.py        mobilevit_xxs
  models/cct.py              cct_7_3x1, vit_lite_7_4, cvt_7_4
  models/k47.py              k47_* (kentaroy47/vision-transformers-cifar10's --net models)
  models/conv_layers.py      the pieces the CNNs share (conv3x3, init, ...)
  models/vgg.py              cnn, vgg16, vgg19
  models/resnet.py           resnet*, preact_resnet*, wrn28_10
  models/pyramidnet.py       pyramidnet110, pyramidnet272
  models/torchvision_nets.py efficientnetv2_*, convnext_*

    python -m models        # prints README's model table: what each name is, parameters, FLOPs
"""
import inspect
from dataclasses import dataclass

from utils import LazyRegistry, UserError

# importing each registers its models
FAMILIES = ("vit", "models.vit_variants", "models.cait", "models.swin", "models.mixer", "models.mobilevit",
            "models.cct", "models.k47", "models.vgg", "models.resnet", "models.pyramidnet",
            "models.torchvision_nets")

# main.py's flags, where one is not the option's name with dashes (the error names the flag).
FLAGS = {"maths": "--vit-maths", "cls_token": "--off-cls-token"}

# The positional parameters every builder takes after its bound arguments; they are not options.
_POSITIONAL = ("num_classes", "image_size", "in_chans")


def flag(option):
    return FLAGS.get(option, "--" + option.replace("_", "-"))


@dataclass(frozen=True)
class ImageSizes:
    """Image sides a model takes: multiples of `multiple`, at least `minimum`.

    `multiple` may name an option ("patch_size"), or be a function of the options (with the
    builder's defaults filled in), when the model's stride depends on them.
    """

    multiple: object = 1
    minimum: int = 1

    def resolve(self, options):
        m = self.multiple
        if isinstance(m, str):
            m = options[m]
        elif callable(m):
            m = m(options)
        return int(m), max(int(self.minimum), int(m))

    def describe(self, options):
        m, lo = self.resolve(options)
        if m == 1:
            return f"{lo} or more"
        first = -(-lo // m) * m  # the smallest multiple of m that is >= lo
        start = "" if first == m else f" from {first}"
        return f"multiples of {m}{start} ({first}, {first + m}, ...)"

    def takes(self, size, options):
        m, lo = self.resolve(options)
        return size >= lo and size % m == 0


@dataclass(frozen=True)
class ModelSpec:
    """One registered name: its builder with the architecture arguments bound, and its metadata."""

    name: str
    builder: object
    args: tuple
    kwargs: dict
    about: str
    sizes: ImageSizes

    @property
    def defaults(self):
        """{option: the builder's default}: the options this model accepts."""
        params = inspect.signature(self.builder).parameters.values()
        return {p.name: p.default for p in params
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in self.kwargs}

    def __call__(self, num_classes, image_size=32, in_chans=3, **options):
        return self.builder(*self.args, num_classes, image_size, in_chans, **self.kwargs, **options)


def _check_builder(name, fn, args, kwargs):
    params = list(inspect.signature(fn).parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise TypeError(f"model {name!r}: builder {fn.__name__} takes **kwargs, so it could drop options silently")
    positional = [p.name for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    if positional[len(args):] != list(_POSITIONAL):
        raise TypeError(f"model {name!r}: builder {fn.__name__} must take {', '.join(_POSITIONAL)} "
                        f"after its {len(args)} bound argument(s), got {positional}")
    keyword = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    if set(kwargs) - keyword:
        raise TypeError(f"model {name!r}: {fn.__name__} has no keyword {sorted(set(kwargs) - keyword)}")


MODELS = LazyRegistry("model", FAMILIES)  # utils.LazyRegistry of ModelSpec


def register_model(name, *args, about, sizes=None, **kwargs):
    """Decorator: register `name` as fn(*args, num_classes, image_size, in_chans, **kwargs, **options).

    Stack several to register one builder under several names; fn is returned unchanged.
    `sizes` is an ImageSizes or the dict of its fields.
    """
    if isinstance(sizes, dict):
        sizes = ImageSizes(**sizes)

    def decorate(fn):
        _check_builder(name, fn, args, kwargs)
        MODELS.register(name, ModelSpec(name, fn, args, dict(kwargs), about, sizes or ImageSizes()))
        return fn

    return decorate


def model_names():
    return MODELS.names()


def accepted_options(name):
    """The option names `build_model(name, ...)` accepts."""
    return set(MODELS.get(name).defaults)


def takers(option):
    """The models that accept `option`, sorted."""
    return [n for n in MODELS.names() if option in MODELS.get(n).defaults]


def _set(options):
    return {k: v for k, v in options.items() if v is not None}


def check_options(name, **options):
    """UserError (one line) if an option (not None) is not one of the model's."""
    spec = MODELS.get(name)
    bad = sorted(set(_set(options)) - set(spec.defaults))
    if not bad:
        return
    parts = []
    for option in bad:
        others = takers(option)
        where = f"models that take it: {', '.join(others)}" if others else "no model takes it"
        parts.append(f"{flag(option)} is not an option of {name}; {where}")
    raise UserError("; ".join(parts))


def check_image_size(name, image_size, **options):
    """UserError (one line) unless the model takes images of side `image_size` (with these options)."""
    spec = MODELS.get(name)
    full = {**spec.defaults, **_set(options)}
    if not (isinstance(image_size, int) and spec.sizes.takes(image_size, full)):
        m = spec.sizes.multiple
        at = f" at {flag(m)} {full[m]}" if isinstance(m, str) else ""
        raise UserError(f"{name} takes --image-size {spec.sizes.describe(full)}{at}; got {image_size}")


def build_model(name, num_classes, image_size, in_chans, **options):
    """The model `name`, with the options given (None = not set: the model's default).

    One-line UserErrors for an unknown name, an option the model does not take, and an image
    size it cannot take.
    """
    options = _set(options)
    check_options(name, **options)
    check_image_size(name, image_size, **options)
    return MODELS.get(name)(num_classes, image_size, in_chans, **options)


def model_table(num_classes=10, image_size=32, names=None):
    """Markdown rows: name, what it is, parameters, forward GFLOP per image (attention as matrix
    products), for `names` (default: every registered model)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    rows = ["| name | what it is | parameters | GFLOP / image (forward) |", "| --- | --- | ---: | ---: |"]
    for name in MODELS.names() if names is None else names:
        model = build_model(name, num_classes, image_size, 3).eval()
        # Under no_grad the counter's module tracker trips over class-attention blocks (CaiT).
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, image_size, image_size))
        params = sum(p.numel() for p in model.parameters())
        rows.append(f"| `{name}` | {MODELS.get(name).about} | {params / 1e6:.2f}M | "
                    f"{counter.get_total_flops() / 1e9:.3f} |")
    return "\n".join(rows)

