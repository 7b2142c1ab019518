"""The command line's vocabulary comes from the registries, and --policy with its original
boolean spellings means one thing."""
import pytest

import build
import main as cli
from augment import POLICIES
from optim import OPTIMIZERS, SCHEDULERS
from utils import UserError


def resolved(*argv):
    args = cli.parse_args(list(argv))
    build.resolve_args(args)
    return args


@pytest.mark.parametrize("name", ["autoaugment", "randaugment", "trivialaugment"])
def test_policy_flag_and_its_boolean_alias_are_the_same_run(name):
    a, b = vars(resolved("--policy", name)), vars(resolved(f"--{name}"))
    assert a == b and a["policy"] == name and a[name] is True


def test_one_policy_only_and_unknown_names_are_one_line():
    with pytest.raises(UserError, match="choose one augmentation policy, not --policy randaugment and --autoaugment"):
        resolved("--policy", "randaugment", "--autoaugment")
    with pytest.raises(UserError, match="unknown --policy 'auto'; choose from: autoaugment, k47_randaugment, none"):
        resolved("--policy", "auto")
    assert resolved("--policy", "autoaugment", "--autoaugment").policy == "autoaugment"  # the same one twice is fine


def test_help_lists_what_the_registries_hold(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for names in (POLICIES.names(), OPTIMIZERS.names(), SCHEDULERS.names()):
        assert ", ".join(names) in out
    assert "(default: None)" not in out and "(default: True)" not in out  # each default said once, switches none
