"""SHI-Labs/Compact-Transformers: CCT-7/3x1 (timm configs and the old script), ViT-Lite-7/4, CVT-7/4."""
from recipes import Recipe, figure, full_flags, register

register(Recipe(
    name="cct_7_3x1",
    model_name="cct_7_3x1",
    flags=full_flags(
        optimizer="adamw", lr=5.5e-4, min_lr=1e-5, weight_decay=0.06, wd_exclude_norm_bias=True,
        # timm's CosineLRScheduler stepped per epoch: warm-up from warmup_lr, the cosine over 300 epochs
        # counted from epoch 0, then timm's train.py adds 10 cool-down epochs at min_lr (310 in all).
        scheduler="timm_cosine", warmup_epoch=10, warmup_lr=1e-5, cooldown_epochs=10, lr_per_step=False,
        batch_size=128, max_epochs=310,
        criterion="torch_ls", label_smoothing=True, smoothing=0.1,
        # timm 'rand-m9-mstd0.5-inc1' (n2 and p0.5 are timm's defaults), timm's own RandAugment.
        policy="timm_randaugment", ra_n=2, ra_m=9, ra_mstd=0.5, ra_prob=0.5, ra_inc=1,
        mixup=True, mixup_alpha=0.8, cutmix=True, cutmix_beta=1.0, mix_prob=1.0, mix_choice="random",
        mixup_off_epoch=175,  # the CIFAR-10 config stops mixing from epoch 175; CIFAR-100's never does
        random_erasing=0.0, drop_path=0.1, dropout=0.0, attn_dropout=0.1,
        # timm's train crop: RandomResizedCropAndInterpolation(32, scale 0.8-1, ratio 3/4-4/3, random filter)
        crop="timm_rrc", rrc_scale=[0.8, 1.0], rrc_ratio=[3 / 4, 4 / 3], rrc_interpolation="random",
    ),
    per_dataset={"c100": {"lr": 6e-4, "warmup_lr": 1e-6, "mixup_off_epoch": 0, "random_erasing": 0.25}},
    published={
        "c10": figure(96.53, 300, "README 'CIFAR-10 and CIFAR-100' (learnable PE, no pretraining); "
                                "config configs/pretrained/cct_7-3x1_cifar10_300epochs.yml"),
        "c100": figure(80.92, 300, "README 'CIFAR-10 and CIFAR-100'; config "
                                 "configs/pretrained/cct_7-3x1_cifar100_300epochs.yml"),
    },
    source=("SHI-Labs/Compact-Transformers: configs/pretrained/cct_7-3x1_cifar{10,100}_300epochs.yml "
            "(timm train.py), README results table, model defaults in src/cct.py"),
    differences=(
        "Schedule: --scheduler timm_cosine is timm's CosineLRScheduler as its train.py steps it, per epoch: "
        "linear warm-up from warmup_lr (1e-5 on CIFAR-10, 1e-6 on CIFAR-100) over 10 epochs, the cosine "
        "counted from epoch 0 to min_lr at epoch 300, then 10 cool-down epochs at min_lr: --max-epochs 310 "
        "with --cooldown-epochs 10 (the published 300 epochs are the cosine's). RandAugment is timm's rand-m9-mstd0.5-inc1 (--policy timm_randaugment: "
        "its op set, p 0.5, magnitude noise, random bilinear/bicubic, the CIFAR-mean fill): timm's own "
        "transform on the workers path, a batched copy that matches each of its ops pixel for pixel on "
        "the device path. Where timm asks for 0 posterize bits (PosterizeIncreasing at magnitude 10, "
        "which ~2% of draws clip to) both paths give a black image, as Pillow without a bits check did "
        "(Pillow 13 raises ValueError there, which would stop timm's own run). It runs after the crop "
        "and flip, as in timm. The crop is timm's RandomResizedCropAndInterpolation (scale 0.8-1, ratio "
        "3/4-4/3, bilinear or bicubic per image) back to 32x32: --crop timm_rrc, timm's own transform on the "
        "workers path, on the device a batched copy that draws the same distribution and resizes as Pillow "
        "does, pixel for pixel (timm_crop.py). Mixup 0.8 / CutMix 1.0 with switch prob 0.5 and prob 1 "
        "is --mix-choice random --mix-prob 1; on CIFAR-10 mixing stops from epoch 175 (--mixup-off-epoch "
        "175, timm's mixup_off_epoch). Weight decay: timm exempts 1-D parameters; --wd-exclude-norm-bias also exempts "
        "the position embedding, which timm decays. Stochastic depth 0.1 is --drop-path 0.1 and CCT's "
        "attention dropout 0.1 --attn-dropout 0.1. Label smoothing 0.1 is timm's form (--criterion torch_ls). "
        "Random erasing on CIFAR-100: 0.25 per the stored config at commit 87e9459; another stored "
        "version (3e02036) says 0. Figures are the source's, not measured here."),
))

register(Recipe(
    name="cct_7_3x1_aa",
    model_name="cct_7_3x1",
    flags=full_flags(
        optimizer="adamw", lr=5e-4, min_lr=0.0, weight_decay=0.03, wd_exclude_norm_bias=False,
        scheduler="cosine", warmup_epoch=10, lr_per_step=False, batch_size=64, max_epochs=200,
        criterion="torch_ls", label_smoothing=True, smoothing=0.1,
        autoaugment=True, aa_ops="original", crop_padding=4, drop_path=0.1, dropout=0.0, attn_dropout=0.1,
    ),
    per_dataset={"c100": {"batch_size": 128}},  # the maintainer's CIFAR-100 command (issue #21)
    published={
        "c10": figure(94.78, 200, "examples/README.md table (old training script)"),
        "c100": figure(77.05, 200, "examples/README.md table (old training script)"),
    },
    source=("SHI-Labs/Compact-Transformers examples/main.py (the old script; defaults lr 5e-4, wd 3e-2, "
            "AutoAugment, label smoothing) + examples/README.md (table; CCT-7/3x1 command --warmup 10 "
            "--batch-size 64); issue #21 (CIFAR-100: --warmup 10 --batch-size 128)"),
    differences=(
        "The source warms up as lr/(W-e) in epoch e (lr/10, lr/9, ..., lr) and then decays with a cosine to "
        "0 over the remaining 190 epochs; here the warm-up is linear from 0 in epoch 0 and the cosine "
        "runs after it over 200 epochs, both stepped per epoch. AutoAugment: CCT's utils/autoaug.py is a "
        "modified DeepVoltaire CIFAR10Policy; --aa-ops original is ViT-CIFAR's copy of DeepVoltaire's. "
        "examples/main.py crops (pad 4) and flips; the mid-2021 root main.py did not crop. CIFAR-10 uses the "
        "README's command for CCT-6/3x1 and 7/3x1 (batch 64); CIFAR-100 the maintainer's command in issue "
        "#21 (batch 128). Weight decay on all parameters (AdamW over model.parameters()). CCT's attention "
        "dropout 0.1 is --attn-dropout 0.1. The maintainers say the paper's Table 1 figures are the best of 4 runs "
        "(issue #3); the script reports the best epoch. Figures are the source's, not measured here."),
))

_OLD_SCRIPT = dict(
    optimizer="adamw", lr=5e-4, min_lr=0.0, weight_decay=0.03, scheduler="cosine", warmup_epoch=5,
    lr_per_step=False, batch_size=128, max_epochs=200, criterion="torch_ls", label_smoothing=True,
    smoothing=0.1, autoaugment=True, aa_ops="original", crop_padding=4, drop_path=0.1, dropout=0.0,
    attn_dropout=0.1,  # the model's default in the source
)

_OLD_SCRIPT_DIFFERENCES = (
    "Model not registered here yet: {what}. The README gives no command for it, so these are "
    "examples/main.py's defaults (AdamW 5e-4, wd 3e-2, batch 128, 5 warm-up epochs, 200 epochs, "
    "AutoAugment, label smoothing 0.1, pad-4 crop + flip). The source warms up as lr/(W-e) and decays "
    "with a cosine to 0 after the warm-up; here linear warm-up from 0 and a cosine over 200 epochs. "
    "Attention dropout 0.1 (the model default) is --attn-dropout 0.1; stochastic depth 0.1 is --drop-path 0.1. "
    "Figures are the source's, not measured here.")

register(Recipe(
    name="vit_lite_7_4",
    model_name="vit_lite_7_4",
    flags=full_flags(**_OLD_SCRIPT),
    published={
        "c10": figure(91.38, 200, "examples/README.md table (ViT-Lite 7/4, 3.717M)"),
        "c100": figure(69.75, 200, "examples/README.md table (ViT-Lite 7/4)"),
    },
    source="SHI-Labs/Compact-Transformers examples/README.md table, examples/main.py defaults, src/vit.py (vit_7)",
    differences=_OLD_SCRIPT_DIFFERENCES.format(
        what="ViT-Lite-7/4 (src/vit.py: 4x4 patch conv, 7 layers, dim 256, 4 heads, MLP ratio 2, class "
             "token, learnable PE, attention dropout 0.1, stochastic depth 0.1; 3.717M parameters)"),
))

register(Recipe(
    name="cvt_7_4",
    model_name="cvt_7_4",
    flags=full_flags(**_OLD_SCRIPT),
    published={
        "c10": figure(92.43, 200, "examples/README.md table (CVT 7/4, 3.717M)"),
        "c100": figure(73.01, 200, "examples/README.md table (CVT 7/4)"),
    },
    source="SHI-Labs/Compact-Transformers examples/README.md table, examples/main.py defaults, src/cvt.py (cvt_7)",
    differences=_OLD_SCRIPT_DIFFERENCES.format(
        what="CVT-7/4 (src/cvt.py: ViT-Lite-7/4 with sequence pooling instead of the class token)"),
))
