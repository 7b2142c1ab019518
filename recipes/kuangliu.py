"""kuangliu/pytorch-cifar: the ResNet-18 baseline, with the cosine script and the older step schedule."""
from recipes import Recipe, figure, full_flags, register

_KUANGLIU = dict(
    optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4, min_lr=0.0, warmup_epoch=0,
    lr_per_step=False, batch_size=128, criterion="ce", crop_padding=4, dropout=0.0, drop_path=0.0,
)

register(Recipe(
    name="resnet18",
    model_name="resnet18",
    flags=full_flags(**_KUANGLIU, scheduler="cosine", max_epochs=200),
    published={"c10": figure(93.02, 200, "README 'Accuracy' (ResNet18); the figure predates the cosine "
                                       "script, see resnet18_step")},
    source=("kuangliu/pytorch-cifar README.md 'Accuracy' (ResNet18 93.02%), main.py (SGD 0.1, momentum "
            "0.9, wd 5e-4, batch 128, CosineAnnealingLR(T_max=200), 200 epochs, pad-4 crop + flip)"),
    differences=(
        "Same settings as the current main.py of the source (its per-epoch CosineAnnealingLR to 0 is this "
        "package's per-epoch cosine with no warm-up and --min-lr 0). But the README's 93.02% predates that "
        "script: it was already listed when the README described the manual 0.1/0.01/0.001 schedule over "
        "350 epochs (recipe resnet18_step). The figure is the best test accuracy of the run (the script "
        "checkpoints on it). This resnet18 has kuangliu's parameter count (11.17M). Figure is the "
        "source's, not measured here."),
))

register(Recipe(
    name="resnet18_step",
    model_name="resnet18",
    flags=full_flags(**_KUANGLIU, scheduler="multistep", milestones=[150, 250], gamma=0.1, max_epochs=350),
    published={"c10": figure(93.02, 350, "README 'Accuracy' (ResNet18), with the README's 'Learning rate "
                                       "adjustment' of that time (0.1 / 0.01 / 0.001 at 0 / 150 / 250)")},
    source=("kuangliu/pytorch-cifar README.md at 0ed52b1 ('Accuracy' ResNet18 93.02%; 'Learning rate "
            "adjustment': 0.1 for [0,150), 0.01 for [150,250), 0.001 for [250,350)); main.py of that time "
            "(SGD momentum 0.9, wd 5e-4, batch 128, pad-4 crop + flip)"),
    differences=(
        "The source changed the learning rate by hand (`python main.py --resume --lr=0.01`), which built a "
        "new SGD optimizer, so its momentum buffers restart at epochs 150 and 250; --scheduler multistep "
        "keeps them. The figure is the best test accuracy of the run. Figure is the source's, not "
        "measured here."),
))
