"""kentaroy47/vision-transformers-cifar10: its ViT with 4-pixel patches at 200 / 500 / 1000 epochs."""
from recipes import Recipe, figure, full_flags, register

_K47 = dict(
    optimizer="adam", lr=1e-4, min_lr=0.0, weight_decay=0.0, scheduler="cosine", warmup_epoch=0,
    lr_per_step=False, batch_size=512, criterion="ce", label_smoothing=False,
    policy="k47_randaugment", ra_n=2, ra_m=14, crop_padding=4,  # its own RandAugment, before the crop
    dropout=0.1, drop_path=0.0,  # k47_vit's dropout 0.1 (emb_dropout 0.1 is the model's default)
)
_K47_SOURCE = ("kentaroy47/vision-transformers-cifar10 README 'Results' (ViT patch=4 Epoch@200/500/1000), "
               "train_cifar10.py defaults (--net vit --patch 4 --bs 512 --lr 1e-4 --opt adam), randomaug.py")
_K47_DIFFERENCES = (
    "kentaroy47's RandAugment (randomaug.py, N=2, M=14 of 30) is its own op list (AutoContrast, Equalize, "
    "Invert, Rotate, Posterize, Solarize, SolarizeAdd, Color, Contrast, Brightness, Sharpness, ShearX/Y, "
    "CutoutAbs up to 40 px, TranslateX/Yabs up to 100 px), applied before the random crop: --policy "
    "k47_randaugment, on both paths, each op as its PIL code computes it (at M=14 posterize keeps 1 bit and "
    "a translation moves 46.7 px, blanking a 32-px image, as in the source; its cutout colour on a grey "
    "image, which the source cannot draw, is PIL's grey of that colour, 123). "
    "The source calls scheduler.step(epoch-1) after each epoch of CosineAnnealingLR(T_max=epochs), so "
    "its cosine lags this per-epoch cosine to 0 by two epochs. Adam without weight decay; fp16 with "
    "GradScaler; normalisation std (0.2023, 0.1994, 0.2010). The README figures are rounded to whole "
    "percent and are the best test accuracy of the run (the script checkpoints on it); only CIFAR-10 "
    "is published. The README gives only the epoch count for each row: the other settings are the "
    "script's defaults. Figures are the source's, not measured here.")

for _epochs, _acc, _suffix, _extra in ((200, 80, "", ""), (500, 85, "_500ep", "; an older README listed 88%"),
                                       (1000, 89, "_1000ep", "")):
    register(Recipe(
        name="k47_vit_patch4" + _suffix,
        model_name="k47_vit",
        flags=full_flags(**_K47, max_epochs=_epochs),
        published={"c10": figure(_acc, _epochs, f"README 'ViT patch=4 Epoch@{_epochs}' (rounded){_extra}")},
        source=_K47_SOURCE,
        differences=_K47_DIFFERENCES,
    ))
