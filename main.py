"""ViT-CIFAR: train a Vision Transformer (or a reference CNN) from scratch on CIFAR-10,
CIFAR-100, SVHN or any image folder.

    python main.py --dataset c10 --label-smoothing --autoaugment

The entry point, imported by nothing: the flags (flags.py) become objects in one build layer
(build.py), and train.py runs the loop of `train_one_epoch` / `evaluate` (engine.py). See
README for every flag and ARCHITECTURE for the rooms.
"""
import sys

from flags import get_args_parser, list_recipes, parse_args

__all__ = ["get_args_parser", "main", "cli"]  # get_args_parser: the flags of main.py
from train import train
from utils import run_command


def main(args, epoch_callbacks=()):
    """Train (or evaluate) as the flags say; `epoch_callbacks`: fn(epoch, row) after each epoch."""
    return train(args, epoch_callbacks)


def cli(argv=None):
    # The atomic writes leave the previous checkpoint and logs whole whatever stops the run.
    def run(argv):
        args = parse_args(argv)
        return list_recipes() if args.list_recipes else main(args)
    return run_command(run, argv, interrupted="interrupted", disk_note="; earlier checkpoints and logs are intact")


if __name__ == "__main__":
    sys.exit(cli())
