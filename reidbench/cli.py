"""Command line: parsing only; every command is a few lines calling the library."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

from reidbench.cli_options import (
    SET_HELP,
    add_data_root,
    add_device,
    add_global_options,
    add_output,
    add_training_options,
    log_deprecations,
    log_level,
    propagate_global_options,
    set_third_party_levels,
)
from reidbench.cli_robustness import add_robustness_parsers, cmd_bench, cmd_robustness
from reidbench.engine.progress import showing
from reidbench.errors import ConfigError, ReidbenchError
from reidbench.registry import load_builtins, load_plugins

log = logging.getLogger("reidbench")



def _run_description() -> str:
    """``run --help``: the registered models and datasets (``reidbench models``, ``data list``)."""
    from reidbench.datasets.catalog import dataset_infos
    from reidbench.registry import MODELS

    load_builtins()
    return ("Train a model on a dataset, evaluate it and record the run.\n\n"
            f"models:   {', '.join(MODELS.names())}  (details: reidbench models)\n"
            f"datasets: {', '.join(i.name for i in dataset_infos() if i.name != 'folder')}, folder:<path>  "
            "(trees: reidbench data list)")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage dumps."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="train a model on a dataset, evaluate it, record the run",
                       description=_run_description(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registered model name (default: ape)")
    p.add_argument("--dataset", help="registered dataset name, or folder:<path> (default: "
                                     "synthetic-reid)")
    add_training_options(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=SET_HELP)
    add_output(p, "results/runs", "<run-id>/", unset=True)
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN",
                   help="continue an interrupted run from its last checkpoint: a run folder or "
                        "id, or nothing for the newest interrupted run of this model/dataset/seed")


def _data_parser(sub: Any) -> None:
    from reidbench.cli_data import add_data_parser

    add_data_parser(sub)


def build_parser() -> Parser:
    parser = Parser(prog="reidbench", description="Benchmark re-ID and face ViTs under misalignment.")
    add_global_options(parser)  # -v, -q: accepted after the subcommand too (see the end)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _run_parser(sub)
    _data_parser(sub)
    ev = sub.add_parser("evaluate", help="metrics of features saved by any model (.npz)")
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--features", type=Path,
                        help="re-ID: query_feats, gallery_feats, query_pids, gallery_pids, query_camids, "
                             "gallery_camids; verification: feats1, feats2, labels[, folds]")
    source.add_argument("--run", help="a recorded run (folder or id under --runs): evaluate its model "
                                      "on --dataset's test side (e.g. ijbb, ijbc, lfw, market1501)")
    ev.add_argument("--runs", type=Path, default=Path("results/runs"), help="where run ids are looked up")
    ev.add_argument("--dataset", help="with --run: the dataset to test on (default: the run's own)")
    add_data_root(ev, " of --run's test dataset (default: $REIDBENCH_DATA, else ./datasets)")
    add_device(ev, " for --run (default: the run's)")
    ev.add_argument("--metric", default="cosine", choices=("cosine", "euclidean"),
                    help="similarity of the features (default: cosine)")
    ev.add_argument("--max-rank", type=int, default=50, metavar="R",
                    help="longest CMC curve reported (default: 50)")
    ev.add_argument("--json", type=Path, help="also write the metrics as JSON (fractions in [0, 1])")
    ev.add_argument("--index", default="flat", choices=("flat", "ivf", "hnsw"),
                    help="FAISS gallery index for --topk (flat = exact)")
    ev.add_argument("--topk", type=int,
                    help="re-ID: rank only the top K of a FAISS search; metrics are then "
                         "truncated at K (mAP@K is a lower bound of mAP)")
    ev.add_argument("--nlist", type=int, help="--index ivf: inverted lists (default: 4 sqrt(gallery), "
                                              "at most gallery / 39)")
    ev.add_argument("--nprobe", type=int, help="--index ivf: lists searched per query (16)")
    ev.add_argument("--hnsw-m", type=int, help="--index hnsw: graph links per node (32)")
    ev.add_argument("--ef-search", type=int, help="--index hnsw: candidates per query (128, at least K)")
    ev.add_argument("--index-file", type=Path,
                    help="save the built FAISS index there (with a fingerprint PATH.json) and "
                         "reuse it on later calls; a stale or mismatched index is refused")
    ev.add_argument("--recall-sample", type=int, metavar="N",
                    help="also report the index's recall@K against exact search on N seeded "
                         "queries")
    ev.add_argument("--rerank", action="store_true",
                    help="re-ID: k-reciprocal re-ranking (Zhong et al. 2017) on FAISS neighbour "
                         "lists before the full-ranking metrics")
    ev.add_argument("--k1", type=int, default=20, help="re-ranking: k-reciprocal neighbours (20)")
    ev.add_argument("--k2", type=int, default=6, help="re-ranking: query-expansion neighbours (6)")
    ev.add_argument("--lambda", dest="lambda_value", type=float, default=0.3,
                    help="re-ranking: weight of the original distance (0.3)")
    models = sub.add_parser("models", help="list the models with parameter counts and FLOPs")
    models.add_argument("names", nargs="*", help="models to list (default: all registered)")
    models.add_argument("--dataset", help="input size and keypoints of this dataset's preset "
                                          "(default: synthetic-reid)")
    models.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set model.size=small")
    lb = sub.add_parser(
        "leaderboard", help="rebuild results/leaderboard.csv from run records",
        description="Rebuild the leaderboard CSV (one row per run) and its markdown copy (same "
                    "name, .md) from the complete run records under --runs; beside it the "
                    "per-task leaderboards <name>-reid.{csv,md} and <name>-verification.{csv,md} "
                    "(one row per dataset, model and recipe: mean, std and number of seeds, "
                    "robustness scores with 95 % intervals), <name>-comparison.{csv,md} (each "
                    "model minus --reference) and index.html (all of it, self-contained). "
                    "Nothing is written when --runs does not exist or yields no readable complete "
                    "run, and an existing file there that reidbench did not write is never "
                    "replaced; a malformed or incomplete run is skipped with a warning naming it.")
    lb.add_argument("--runs", type=Path, default=Path("results/runs"),
                    help="run records folder (default: results/runs)")
    lb.add_argument("--out", type=Path, default=Path("results/leaderboard.csv"),
                    help="the CSV to write, a name ending in .csv (default: "
                         "results/leaderboard.csv); the markdown copy goes beside it as .md")
    lb.add_argument("--robustness", type=Path, metavar="DIR",
                    help="robustness reports to read the scores from (default: robustness/ "
                         "beside the --runs folder)")
    lb.add_argument("--reference", default="ape",
                    help="model every other one is compared with (default: ape)")
    add_robustness_parsers(sub)
    _add_plugin_option(parser)
    propagate_global_options(parser)  # last: every top-level option, after any subcommand too
    return parser


PLUGIN_HELP = ("import MODULE first, so that what it registers (a model, loss, dataset, ...) can "
               "be named; repeatable, before or after the command. Installed packages' "
               "'reidbench.plugins' entry points are always loaded")


def _add_plugin_option(parser: argparse.ArgumentParser) -> None:
    """``--plugin MODULE`` on the top level and on every subcommand, each level with its own
    ``plugins_<i>`` destination so that the modules given before and after a subcommand add up
    (``plugin_modules`` gathers them)."""
    from reidbench.cli_options import subparsers

    parser.add_argument("--plugin", dest="plugins_0", action="append", metavar="MODULE",
                        default=[], help=PLUGIN_HELP)
    for i, (_, sub) in enumerate(subparsers(parser), start=1):
        sub.add_argument("--plugin", dest=f"plugins_{i}", action="append", metavar="MODULE",
                         default=argparse.SUPPRESS, help=PLUGIN_HELP)


def plugin_modules(args: argparse.Namespace) -> list[str]:
    """The ``--plugin`` modules, top level first, then each subcommand level's."""
    levels = sorted((int(k.rpartition("_")[2]), v) for k, v in vars(args).items()
                    if k.startswith("plugins_"))
    return [module for _, modules in levels for module in modules]


def cmd_run(args: argparse.Namespace) -> int:
    import shlex

    from reidbench.config import cli_flags, resolve_config
    from reidbench.datasets.catalog import dataset_builder
    from reidbench.engine.run import (
        RunInterrupted,
        find_resume_dir,
        resume_config,
        resume_request,
        run_experiment,
    )
    from reidbench.evaluation.tasks import summary_line
    from reidbench.registry import MODELS

    flags = cli_flags(args.data_root, args.epochs, args.batch_size, args.device, args.seed)
    if args.output is not None:
        flags["output"] = str(args.output)
    cfg = resolve_config(args.dataset, args.model, args.config, flags, args.overrides)
    MODELS.get(cfg.model.name)
    dataset_builder(cfg.data.name)
    resume = args.resume is not None
    run_dir = None
    if resume:
        run_dir = find_resume_dir(cfg, args.resume or None)
        cfg = resume_config(run_dir, resume_request(args.model, args.dataset, args.config, flags,
                                                    args.overrides))
    try:
        run_dir, metrics = run_experiment(cfg, run_dir, resume=resume)
    except RunInterrupted as stop:
        if stop.resumable:
            sys.stderr.write("reidbench: interrupted; continue from the last checkpoint with: "
                             f"reidbench run --resume {shlex.quote(str(stop.run_dir))}\n")
        else:
            what = (f"the run folder {stop.run_dir} was removed" if stop.removed else
                    f"{stop.run_dir} was kept: it holds files this run did not write")
            sys.stderr.write("reidbench: interrupted before the first epoch finished: nothing "
                             f"was saved ({what}); start the run again with the same command\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("reidbench: interrupted before the run started; nothing was written\n")
        return 130
    log.info("%s", summary_line(metrics))
    log.info("run record: %s", run_dir)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from reidbench.cli_data import cmd_data as run_data_command

    return run_data_command(args)


def cmd_models(args: argparse.Namespace) -> int:
    from reidbench.config import resolve_config
    from reidbench.datasets.catalog import dataset_builder, dataset_info
    from reidbench.registry import MODELS
    from reidbench.reporting.model_table import format_table, model_rows

    rows = []
    for name in args.names or MODELS.names():
        cfg = resolve_config(args.dataset, name, overrides=args.overrides)
        MODELS.get(cfg.model.name)
        dataset_builder(cfg.data.name)
        info = dataset_info(cfg.data.name)
        k = info.num_keypoints if info else 0
        (row,) = model_rows([cfg.model.name], (cfg.data.height, cfg.data.width), k, cfg.model)
        rows.append(row | {"name": f"{cfg.model.name}_{cfg.model.size}"})
    sys.stdout.write(f"input {cfg.data.height}x{cfg.data.width} ({cfg.data.name}), "
                     f"{k} keypoints; FLOPs of one forward at batch 1 (multiply-add = 2)\n")
    sys.stdout.write(format_table(rows) + "\n")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.max_rank < 1:
        raise ConfigError(f"--max-rank must be >= 1, got {args.max_rank}")
    if args.json is not None and args.json.is_dir():  # refused before computing anything
        raise ConfigError(f"--json {args.json} is a directory; give a file name, e.g. "
                          f"{args.json / 'metrics.json'}")
    if args.run is not None:
        from reidbench.engine.run import evaluate_run
        from reidbench.engine.sources import find_run
        from reidbench.evaluation.features_eval import run_lines

        metrics = evaluate_run(find_run(args.runs, args.run), args.dataset, args.data_root,
                               args.device)
        result = run_lines(metrics, args.run)
    else:
        if args.dataset or args.data_root or args.device:
            raise ConfigError("--dataset, --data-root and --device go with --run")
        from reidbench.evaluation.features_eval import evaluate_features

        result = evaluate_features(args.features, metric=args.metric, max_rank=args.max_rank,
                                   index=args.index, topk=args.topk, rerank=args.rerank,
                                   nlist=args.nlist, nprobe=args.nprobe, hnsw_m=args.hnsw_m,
                                   ef_search=args.ef_search, index_file=args.index_file,
                                   recall_sample=args.recall_sample,
                                   k1=args.k1, k2=args.k2, lambda_value=args.lambda_value)
    sys.stdout.write("".join(line + "\n" for line in result.lines))
    if args.json:
        from reidbench.fileio import atomic_write_json

        atomic_write_json(args.json, result.metrics)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from reidbench.reporting.leaderboard_tables import leaderboard_command, publish

    result = publish(args.runs, args.out, args.robustness, reference=args.reference,
                     command=leaderboard_command(args.runs, args.out, args.robustness, args.reference))
    rows, skipped = result.rows, result.skipped
    log.info("wrote %s, %s and %s: %d runs (%d skipped)", args.out, args.out.with_suffix(".md"),
             ", ".join(str(p) for p in result.paths), len(rows), len(skipped))
    if skipped:
        log.warning("%d malformed run record(s) skipped (named above)", len(skipped))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = log_level(args)
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    set_third_party_levels(level)  # faiss's loader lines and the like only with -v
    log_deprecations(args, log)
    load_builtins()  # every built-in model, loss, perturbation and dataset
    with showing(not args.quiet and sys.stderr.isatty()):  # progress bars on a terminal
        return _dispatch(args, argv)


def _dispatch(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Run the command; a ReidbenchError or an OSError becomes one line on stderr, exit 2."""
    try:
        load_plugins(plugin_modules(args))  # --plugin modules and installed entry points
        if args.command == "run":
            return cmd_run(args)
        if args.command == "data":
            return cmd_data(args)
        if args.command == "models":
            return cmd_models(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command in ("robustness", "bench"):
            command = cmd_robustness if args.command == "robustness" else cmd_bench
            return command(args, sys.argv[1:] if argv is None else argv)
        return cmd_leaderboard(args)
    except ReidbenchError as exc:
        sys.stderr.write(f"reidbench: error: {exc}\n")
        return 2
    except OSError as exc:  # last resort: the file system refused (permissions, full disk, ...)
        log.debug("operating-system error", exc_info=True)  # -v shows where
        sys.stderr.write(f"reidbench: error: {os_error_line(exc)}\n")
        return 2


# errors of writing rather than of finding or opening a path
WRITE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG")
                         if hasattr(errno, name))


def os_error_line(exc: OSError) -> str:
    """``<what> <path>: <strerror>`` for an operating-system error that escaped a command (a
    permission error, a full disk, a directory where a file was expected, ...)."""
    what = "cannot write" if exc.errno in WRITE_ERRNOS else "cannot access"
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return f"{what} a file: {reason}".replace("\n", " ")
    path = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
    return f"{what} {path}: {reason}".replace("\n", " ")


if __name__ == "__main__":
    sys.exit(main())
