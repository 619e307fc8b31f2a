"""Options shared by the subcommands: one spelling, one meaning and one help text each.

Vocabulary (the README's command table follows it):

- ``--output DIR``: the folder a command writes its records or report into (``run``, ``bench``,
  ``robustness``);
- ``--out FILE``: the one file a command writes (``leaderboard``, ``data preview``);
- ``--data-root DIR``: the datasets a command reads (``data synth --root DIR``: the dataset
  folder it creates);
- ``--seed S``: the seed of a command's own randomness (training, generation, sampling);
  ``--perturb-seed S``: the seed of the perturbation draws of a robustness sweep.

Global flags (``-q``, ``-v`` and any other option of the top-level parser) are accepted before or
after the subcommand: ``propagate_global_options`` copies them into every subcommand with a
``SUPPRESS`` default, so a flag given after the subcommand overrides the one before it and an
absent one leaves the top-level value alone.

An old spelling stays for one release as a ``DeprecatedAlias``: it sets the new option and
records a warning that ``log_deprecations`` logs once logging is configured.
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# help text of the shared options: every subcommand's help starts with these words
DATA_ROOT_HELP = "data root"
DATA_ROOT_DEFAULT = " (default: $REIDBENCH_DATA, else ./datasets)"
EPOCHS_HELP = "training epochs (default: the preset's train.epochs)"
TRAIN_BATCH_HELP = "training batch size in images (default: the preset's train.batch_size)"
DEVICE_HELP = "device: auto, cpu, cuda or cuda:N"
TRAIN_SEED_HELP = "training seed: initialisation, sampler and augmentation (default: the preset's train.seed)"
CONFIG_HELP = "YAML file merged over the presets"
SET_HELP = "override a config key, e.g. --set train.lr=3e-4 (repeatable)"
OUTPUT_HELP = "folder receiving"
VERBOSE_HELP = "debug logging (third-party libraries log at info)"
QUIET_HELP = "warnings only, no progress bars"

DEPRECATIONS = "_deprecations"  # namespace attribute listing the deprecated spellings used


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """``-v`` / ``-q`` on the top-level parser (copied into every subcommand afterwards)."""
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)


def subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every subcommand parser below ``parser``, nested ones included, as ("run", p),
    ("data check", p), ...; each parser once (aliases skipped)."""
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if id(sub) in seen:
                    continue
                seen.add(id(sub))
                yield name, sub
                for child, deeper in subparsers(sub):
                    yield f"{name} {child}", deeper


def global_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The top-level parser's options (help excluded): the global flags."""
    return [a for a in parser._actions if a.option_strings
            and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def propagate_global_options(parser: argparse.ArgumentParser) -> None:
    """Accept every top-level option after any subcommand too (default ``SUPPRESS`` there, so
    the top-level value stands unless the flag is given after the subcommand)."""
    actions = global_actions(parser)
    for _, sub in subparsers(parser):
        taken = set(sub._option_string_actions)
        for action in actions:
            if taken.intersection(action.option_strings):
                continue  # a subcommand's own option of that name wins
            clone = copy.copy(action)
            clone.default = argparse.SUPPRESS
            clone.required = False
            sub._add_action(clone)


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores into the new option's ``dest`` and records a
    deprecation warning naming the new spelling."""

    def __init__(self, option_strings: Sequence[str], dest: str, replacement: str = "",
                 **kwargs: Any) -> None:
        self.replacement = replacement
        kwargs["help"] = (f"deprecated spelling of {replacement}, removed in the next release"
                          + (f": {kwargs['help']}" if kwargs.get("help") else ""))
        kwargs["default"] = argparse.SUPPRESS
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        notes = list(getattr(namespace, DEPRECATIONS, []))
        notes.append(f"{option_string} is deprecated and will be removed in the next release; "
                     f"use {self.replacement}")
        setattr(namespace, DEPRECATIONS, notes)


def add_output(parser: argparse.ArgumentParser, default: str, receives: str,
               old: str | None = None, unset: bool = False) -> None:
    """``--output DIR``; ``old``: a deprecated spelling kept as an alias; ``unset``: the value
    is None when not given (the config's own ``output``, ``default``, then applies)."""
    parser.add_argument("--output", type=Path, default=None if unset else Path(default),
                        metavar="DIR", help=f"{OUTPUT_HELP} {receives} (default: {default})")
    if old is not None:
        parser.add_argument(old, dest="output", type=Path, metavar="DIR", action=DeprecatedAlias,
                            replacement="--output DIR")


def add_data_root(parser: argparse.ArgumentParser, note: str = DATA_ROOT_DEFAULT) -> None:
    parser.add_argument("--data-root", help=DATA_ROOT_HELP + note)


def add_device(parser: argparse.ArgumentParser, note: str = " (default: the preset's train.device)",
               default: str | None = None) -> None:
    parser.add_argument("--device", default=default, metavar="DEVICE", help=DEVICE_HELP + note)


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The training flags of ``run`` and ``bench`` (``config.cli_flags``), same help in both."""
    add_data_root(parser)
    parser.add_argument("--epochs", type=int, metavar="N", help=EPOCHS_HELP)
    parser.add_argument("--batch-size", type=int, metavar="N", help=TRAIN_BATCH_HELP)
    add_device(parser)
    parser.add_argument("--seed", type=int, metavar="S", help=TRAIN_SEED_HELP)
    parser.add_argument("--config", type=Path, metavar="FILE", help=CONFIG_HELP)


# loggers of libraries whose info lines read like errors to a user (faiss's loader: "Could not
# load library with AVX512 support due to: ModuleNotFoundError ...") or flood debug output
THIRD_PARTY_LOGGERS = ("faiss", "matplotlib", "PIL", "timm", "torchreid")


def log_level(args: argparse.Namespace) -> int:
    """The level the user chose: -v debug, -q warning, else info."""
    return logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO


def set_third_party_levels(level: int) -> None:
    """Keep third-party noise below the user's level: their info lines only with -v (at
    debug), their warnings always."""
    quieter = logging.INFO if level <= logging.DEBUG else max(level, logging.WARNING)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(quieter)


def log_deprecations(args: argparse.Namespace, log: logging.Logger) -> None:
    for note in getattr(args, DEPRECATIONS, []):
        log.warning("%s", note)
