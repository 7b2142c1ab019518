"""aanna0701/SPT_LSA_ViT (Lee et al. 2021): ViT with shifted patch tokenization and locality self-attention."""
from recipes import Recipe, figure, full_flags, register

register(Recipe(
    name="vit_spt_lsa",
    model_name="vit_spt_lsa",
    flags=full_flags(
        optimizer="adamw", lr=1e-3, min_lr=1e-5, weight_decay=0.05, wd_exclude_norm_bias=False,
        # The source's 100 epochs are 300 passes (its RASampler: len_factor 3), per-step schedule.
        scheduler="cosine", lr_per_step=True, warmup_epoch=30, max_epochs=300, batch_size=128,
        repeated_aug=1,  # the source repeats no image within an epoch; see differences
        criterion="torch_ls", label_smoothing=True, smoothing=0.1,
        autoaugment=True, aa_ops="original", crop_padding=4,
        mixup=True, mixup_alpha=1.0, cutmix=True, cutmix_beta=1.0, mix_prob=0.5, mix_choice="random",
        random_erasing=0.25, erasing_style="zhong", drop_path=0.1, dropout=0.0,
    ),
    per_dataset={"svhn": {"hflip": True}},  # the source flips SVHN too
    published={
        "c10": figure(94.53, 100, "README 'Small-Size Dataset Classification' (SL-ViT); 100 source epochs "
                                "= 300 passes over the data"),
        "c100": figure(76.92, 100, "README (SL-ViT); 100 source epochs = 300 passes"),
        "svhn": figure(97.79, 100, "README (SL-ViT); 100 source epochs = 300 passes"),
    },
    source=("aanna0701/SPT_LSA_ViT README.md (SL-ViT row; `python main.py --model vit --is_LSA --is_SPT`), "
            "main.py defaults, models/create_model.py; arXiv:2112.13492"),
    differences=(
        "Epochs: the source's RASampler(len, batch, 1, args.ra=3) means repetitions 1 and len_factor 3 (the "
        "FixRes usage): each of its 100 'epochs' is three shuffled passes over the training set, one after "
        "another, so it is --max-epochs 300 --warmup-epoch 30 here with --repeated-aug 1 "
        "(this package's --repeated-aug N repeats each image N times in a row, which the source does not "
        "do). Schedule, stepped per step (--lr-per-step): SPT_LSA_ViT stores its utils/scheduler.py only as "
        ".pyc; the same authors' SPM_LMSA_ViT has two versions, timm's CosineLRScheduler (lr_min 5e-6, "
        "warm-up from 5e-7) and CosineAnnealingWarmupRestarts (min_lr 1e-5: linear warm-up from min_lr, "
        "then a cosine to min_lr over the steps after the warm-up). The main.py calls scheduler.step() "
        "without an argument after every step, which timm's scheduler refuses (its step needs the epoch), "
        "so the recipe takes the second: --scheduler cosine --min-lr 1e-5, whose warm-up starts at lr/steps "
        "instead of 1e-5 (at most 1e-5 apart, during the warm-up only). The sampler's signature is from "
        "SPM_LMSA_ViT's utils/sampler.py (also .pyc only in SPT_LSA_ViT). Label smoothing: its losses.py is not stored; its main.py derives from CCT's, whose loss is "
        "timm's form, hence --criterion torch_ls. Mixing: with prob 0.5 a batch gets CutMix or Mixup (0.5 each) "
        "= --mix-prob 0.5 --mix-choice random. Random erasing 0.25 is the source's utils/random_erasing.py "
        "(Zhong et al.'s code: area 0.02-0.4, uniform aspect 0.3-3.33, up to 100 tries, the dataset mean as "
        "the fill after Normalize): --erasing-style zhong (the file is stored in SPM_LMSA_ViT). The source flips, crops, "
        "then applies AutoAugment (CIFAR10Policy; SVHNPolicy on SVHN) and flips SVHN too. Figures are the source's, not measured here."),
))
