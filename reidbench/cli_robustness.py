"""`reidbench robustness` and `reidbench bench`: parsing, then one library call each."""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path
from typing import Any

from reidbench.cli_options import (
    CONFIG_HELP,
    DeprecatedAlias,
    add_data_root,
    add_device,
    add_output,
    add_training_options,
)

log = logging.getLogger("reidbench")

PERTURB_HELP = ("comma-separated perturbations (default: scale,rotate,translate,affine,kpnoise; "
                "all = those and affine_kpnoise, misalignment with landmark noise; levels in "
                "reidbench/data/perturb.py)")
SEVERITY_HELP = "severities to sweep, e.g. 0-5 or 1,3,5 (default 0-5; 0 = clean is always included)"
SIDE_HELP = ("perturbed side: query = re-ID queries (gallery clean) or the second image of each "
             "verification pair (default); both = queries and gallery, or both images of a pair")


def _sweep_options(p: argparse.ArgumentParser, seed_flag: str) -> None:
    p.add_argument("--perturb", help=PERTURB_HELP)
    p.add_argument("--severities", help=SEVERITY_HELP)
    p.add_argument("--side", default="query", choices=("query", "both"), help=SIDE_HELP)
    p.add_argument(seed_flag, dest="perturb_seed", type=int, default=0, metavar="S",
                   help="seed of the per-image perturbation draws (default 0): same seed, same "
                        "perturbed images for every model")


def add_robustness_parsers(sub: Any) -> None:
    """Add the `robustness` and `bench` subcommands to ``sub``."""
    p = sub.add_parser(
        "robustness", help="metrics of trained models under scaling, rotation, translation, "
                           "random similarity and keypoint noise; CSV, plot and markdown report",
        description="Models come from --run (run ids or folders under --runs), --checkpoint "
                    "(files; config from the config.yaml beside each, else the presets of "
                    "--dataset and the model), or, with neither, the newest complete run of "
                    "each --model on --dataset under --runs that was trained with the default "
                    "protocol (no data.aug_affine, data.augment none, CLS head) and still has "
                    "its checkpoint.pt. Writes "
                    "<output>/<id>.csv, .md, .png, -examples.png, -per-sample.npz and .json. "
                    "An existing report of that id (e.g. a committed one under "
                    "results/robustness) is never replaced: the command stops before "
                    "evaluating anything unless --overwrite is given; pick a new --id or --output "
                    "for your own sweep. (`reidbench bench` differs: it trains its own runs and "
                    "regenerates its own report in <output>/robustness.)")
    p.add_argument("--model", help="model name(s), comma-separated, e.g. ape,kprpe")
    p.add_argument("--dataset", help="dataset name (must match the runs' dataset)")
    p.add_argument("--run", help="run id(s) or folder(s), comma-separated, one per --model")
    p.add_argument("--checkpoint", help="checkpoint file(s), comma-separated, one per --model")
    p.add_argument("--runs", type=Path, default=Path("results/runs"),
                   help="run records folder (default: results/runs)")
    _sweep_options(p, "--perturb-seed")
    p.add_argument("--seed", dest="perturb_seed", type=int, metavar="S", action=DeprecatedAlias,
                   replacement="--perturb-seed S")
    add_data_root(p, " replacing the runs' own")
    add_device(p, " (default: auto)", default="auto")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="feature-extraction batch size in images (default: eval.batch_size)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help=CONFIG_HELP + " for --checkpoint files without a config.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for --checkpoint files without a config.yaml")
    add_output(p, "results/robustness", "the report files <id>.*", old="--out")
    p.add_argument("--id", help="report name, a plain file name stem (default: <dataset>-<side>, "
                                "the name of the committed reports)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing report of this --id in --output (default: refuse)")
    p.add_argument("--extend", action="store_true",
                   help="add to an existing report of this --id what it lacks (the models and "
                        "perturbations given that it has no rows for): only those cells are "
                        "evaluated, recorded rows are kept; refused if a recorded model's clean "
                        "metrics do not reproduce or the severities, side or seed differ")
    p.add_argument("--report", type=Path, metavar="CSV",
                   help="only re-render the markdown and plot of an existing robustness CSV")
    p.add_argument("--kp-sensitivity", action="store_true",
                   help="instead of the sweep: how much each model's embedding (mean 1 - cos) and "
                        "metric move under keypoint noise alone (kpnoise at --severities); writes "
                        "<id>.json and .md (default id <dataset>-kp-sensitivity)")

    b = sub.add_parser(
        "bench", help="the whole benchmark: train each model with the same recipe, sweep "
                      "robustness, rebuild the leaderboard and the robustness report",
        description="For each dataset: `reidbench run` for every model and seed (records in "
                    "<output>/runs; a model and seed already recorded there with the same recipe "
                    "is not trained again), then `reidbench robustness` on those runs "
                    "(<output>/robustness/<dataset>-<side>.*), then `reidbench leaderboard` "
                    "(<output>/leaderboard*.csv and .md, <output>/index.html, from every run in "
                    "<output>/runs). The report is "
                    "regenerated from the runs just trained and replaces <dataset>-<side>.* in "
                    "<output>/robustness: that is how the committed reports were made; use "
                    "another --output to keep them.")
    b.add_argument("--dataset", default="synthetic-reid",
                   help="dataset name(s), comma-separated (default: synthetic-reid)")
    b.add_argument("--models", default="ape,rpe,irpe,kprpe",
                   help="models, comma-separated (default: ape,rpe,irpe,kprpe)")
    add_training_options(b)
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key of every run (repeatable)")
    add_output(b, "results", "runs/, leaderboard.csv and robustness/")
    b.add_argument("--seeds", metavar="S,S,...",
                   help="training seeds, comma-separated, e.g. 0,1,2: every model is trained once "
                        "per seed with the same recipe (instead of --seed); a model and seed "
                        "already recorded in <output>/runs with this recipe is not trained again, "
                        "so the command resumes where a stopped bench left off")
    b.add_argument("--reference", default="ape",
                   help="model every other one is compared with in the leaderboard (default: ape)")
    _sweep_options(b, "--perturb-seed")


def _names(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _spec(args: argparse.Namespace) -> Any:
    from reidbench.data.perturb import parse_names, parse_severities
    from reidbench.evaluation.robustness import SweepSpec

    return SweepSpec(parse_names(args.perturb), parse_severities(args.severities), args.side,
                     args.perturb_seed)


def _command(argv: list[str]) -> str:
    return shlex.join(["reidbench", *argv])


def cmd_robustness(args: argparse.Namespace, argv: list[str]) -> int:
    from reidbench.engine.sources import resolve_sources
    from reidbench.engine.sweep import sweep_models
    from reidbench.errors import ConfigError
    from reidbench.reporting.robustness import rebuild_report

    if args.report is not None:
        md, png = rebuild_report(args.report)
        log.info("wrote %s and %s", md, png)
        return 0
    if args.batch_size is not None and args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    spec = _spec(args)
    sources = resolve_sources(
        _names(args.model), args.dataset, runs=_names(args.run), checkpoints=_names(args.checkpoint),
        runs_dir=args.runs, config_file=args.config, overrides=args.overrides,
    )
    if args.kp_sensitivity:
        from reidbench.cli_sensitivity import cmd_kp_sensitivity

        return cmd_kp_sensitivity(args, sources, spec.severities, _command(argv))
    if args.extend:
        from reidbench.engine.sweep_extend import extend_sweep

        if args.overwrite:
            raise ConfigError("--extend keeps the recorded rows and --overwrite replaces them: give one")
        result = extend_sweep(sources, spec, args.output, report_id=args.id, data_root=args.data_root,
                              device=args.device, batch_size=args.batch_size, command=_command(argv))
    else:
        result = sweep_models(sources, spec, args.output, report_id=args.id, data_root=args.data_root,
                              device=args.device, batch_size=args.batch_size, command=_command(argv),
                              overwrite=args.overwrite)
    _log_scores(result.rows)
    return 0


def _log_scores(rows: list[dict[str, Any]]) -> None:
    from reidbench.reporting.robustness_scores import HEADLINE, robustness_scores

    metric = HEADLINE.get(rows[0]["task"], rows[0]["metric"]) if rows else ""
    for label, scores in robustness_scores(rows, metric).items():
        log.info("robustness score (%s) %-8s %s", metric, label,
                 "  ".join(f"{k} {v:.3f}" for k, v in scores.items() if v is not None))


def cmd_bench(args: argparse.Namespace, argv: list[str]) -> int:
    from reidbench.config import cli_flags
    from reidbench.engine.bench import run_bench

    flags = cli_flags(args.data_root, args.epochs, args.batch_size, args.device, args.seed)
    spec = _spec(args)
    models = _names(args.models)
    datasets = _names(args.dataset)
    if not models or not datasets:
        from reidbench.errors import ConfigError

        raise ConfigError("--models and --dataset need at least one name each")
    from reidbench.engine.bench import parse_seeds

    if args.seeds is not None and args.seed is not None:
        from reidbench.errors import ConfigError

        raise ConfigError("give --seed S (one seed) or --seeds S,S,... (several), not both")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    for dataset in datasets:
        result = run_bench(dataset, models, spec, args.output, config_file=args.config, flags=flags,
                           overrides=args.overrides, command=_command(argv), seeds=seeds,
                           reference=args.reference)
        _log_scores(result.robustness.rows)
        log.info("%s: runs %s; report %s; leaderboard %s (%.1f min)", dataset,
                 ", ".join(d.name for d in result.run_dirs), result.robustness.paths["markdown"],
                 result.leaderboard, result.seconds / 60)
    return 0
