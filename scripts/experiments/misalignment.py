"""Does KP-RPE survive misalignment? The whole study of issue 19 in one resumable command.

Usage:
    python3 scripts/experiments/misalignment.py [--out results/misalignment] [--data-root DIR]
        [--seeds 0,1,2] [--size nano] [--only GROUP,...] [--models [GROUP=]MODEL,...]...
        [--device auto] [--tiny]

What it runs (each group is one recipe on one dataset; every model of a group is trained once
per seed with exactly that recipe through ``reidbench.engine.run.run_experiment``, i.e.
``reidbench run``):

==============  =================  ==============================================  ===========
group           dataset            recipe                                          models
==============  =================  ==============================================  ===========
faces-main      synthetic-faces    experiments/misalignment-faces.yaml (the        every encoding
                                   authors' augmentation) + model.head=flatten
reid-main       synthetic-reid     experiments/misalignment-reid.yaml (same)       every encoding
faces-cls       synthetic-faces    main with ``model.head=cls`` (not flatten)      irpe, kprpe,
                                                                                   ape_aligned
reid-cls        synthetic-reid     main with ``model.head=cls`` (not flatten)      irpe, kprpe,
                                                                                   ape_aligned
faces-noaug     synthetic-faces    main + ``data.augment=none`` (preset flip/pad)  irpe, kprpe
reid-noaug      synthetic-reid     main + ``data.augment=none``                    irpe, kprpe
control         folder:<control>   experiments/misalignment-control.yaml + flatten ape, irpe, kprpe,
                                   (reidbench/synthetic/keypoint_control.py)        ape_aligned
control-local   folder:<control>-  control, identity mark within 12 px of the      ape, irpe, kprpe,
                local              centre (the face-like case)                     ape_aligned
control-cls     folder:<control>   control with ``model.head=cls``                 kprpe
==============  =================  ==============================================  ===========

"every encoding": ape, rpe, irpe, kprpe, ape_aligned, and rope, cpe, nope when registered.
``--models`` keeps only the named models in every group, ``--models GROUP=MODEL,...`` (repeatable)
in that group alone (a budget cut: the report lists, per group, the planned models that were
left out, so a reader sees the comparison is partial).
Then, per group and seed: the robustness sweep of its runs (``engine.sweep_extend.extend_sweep``:
scale, rotate, translate, affine, kpnoise and affine_kpnoise (misalignment and landmark noise
together) at severities 0-5, queries / second pair images perturbed; the control groups affine
and kpnoise) and the keypoint sensitivity of every run (``engine.sensitivity``: mean 1 - cos of the
embedding and the metric under kpnoise alone). Last, ``<out>/report.md`` and ``report.json``:
per group and model the clean metric and each robustness score as mean and 95 % t-interval
over seeds, the sensitivity, and KP-RPE's paired difference (per seed) to every other model.

Resumable: run folders have fixed names (``<out>/runs/<group>-<model>-s<seed>``); a complete
run is reused, an interrupted one (checkpoint, no metrics) is resumed, sweeps and sensitivity
reports that exist are read back instead of recomputed, and a model or perturbation added to a
group later is evaluated alone and merged into its records (``extend_sweep``). So the command
can be stopped and started again, and the report regenerated from the records alone.

``--tiny`` shrinks everything (1 seed, 1 epoch, 1 block of width 32, tiny data, two groups, two
perturbations at severities 0 and 5) so a test can run the whole pipeline in a minute: its
numbers mean nothing.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from reidbench.config import RunConfig, resolve_config
from reidbench.datasets.base import ReidSplit
from reidbench.datasets.catalog import build_dataset
from reidbench.datasets.catalog import data_root as default_data_root
from reidbench.engine.checkpoint import CHECKPOINT
from reidbench.engine.run import check_resume, remove_unfinished, resume_config, run_experiment
from reidbench.engine.sensitivity import sensitivity_rows, write_sensitivity
from reidbench.engine.sources import ModelSource, source_from_run
from reidbench.engine.sweep import shared_data_config
from reidbench.engine.sweep_extend import extend_sweep, missing_blocks
from reidbench.errors import ReidbenchError
from reidbench.evaluation.robustness import SweepSpec
from reidbench.fileio import atomic_write_json, atomic_write_text
from reidbench.metrics.chance import CHANCE_ACCURACY, chance_map
from reidbench.registry import MODELS, load_builtins
from reidbench.reporting.records import CONFIG, METRICS, read_json, read_run_config
from reidbench.reporting.robustness import read_csv, report_paths
from reidbench.synthetic.keypoint_control import generate_keypoint_control

log = logging.getLogger("misalignment")

EXPERIMENTS = Path(__file__).resolve().parents[2] / "reidbench" / "configs" / "experiments"
ENCODINGS = ("ape", "rpe", "irpe", "kprpe", "ape_aligned", "rope", "cpe", "nope")
REFERENCE = "kprpe"  # the paired differences are REFERENCE minus each other model
HEADLINE = {"reid": "mAP", "verification": "accuracy"}
# the five single perturbations ("mean" is over these, as in ``reidbench robustness``), then
# misalignment with landmark noise together (what a poor image does to an aligner)
SINGLE = ("scale", "rotate", "translate", "affine", "kpnoise")
PERTURBATIONS = (*SINGLE, "affine_kpnoise")
# two-sided 95 % Student t quantiles by degrees of freedom (1-10); beyond: 1.96
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
# control-local: the identity mark's centre within +-12 px (1.5 patches of 8) of the centre of the
# 64 px image, the face-like case where a part moves a little (control: anywhere)
LOCAL_SPREAD = 12
TINY_MODEL = ("train.epochs=1", "model.depth=1", "model.embed_dim=32", "model.num_heads=2",
              "train.batch_size=16")


@dataclass(frozen=True)
class Group:
    """One recipe on one dataset: its runs are trained with it and swept together per seed."""

    name: str
    dataset: str
    config: Path
    overrides: tuple[str, ...]
    models: tuple[str, ...]
    perturbations: tuple[str, ...] = PERTURBATIONS
    severities: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    spread: int | None = None  # control sets (folder:): the identity mark's spread around the centre
    skipped: tuple[str, ...] = ()  # planned models left out by --models (named in the report)


def plan(control_root: Path, size: str, tiny: bool) -> list[Group]:
    """The study's groups (module docstring); ``tiny`` keeps two small ones."""
    load_builtins()
    every = tuple(m for m in ENCODINGS if m in MODELS)
    sized = (f"model.size={size}",)
    base, cls = sized + ("model.head=flatten",), sized + ("model.head=cls",)  # the authors' head; CLS
    faces, reid, control = (EXPERIMENTS / f"misalignment-{n}.yaml" for n in ("faces", "reid", "control"))
    control_ds = f"folder:{control_root}"
    local_ds = f"folder:{control_root.with_name(control_root.name + '-local')}"
    if tiny:
        small = base + TINY_MODEL
        return [
            Group("reid-main", "synthetic-reid", reid, small + ("data.synth_ids=16", "data.height=64",
                                                                  "data.width=32"),
                  ("ape", "kprpe", "ape_aligned"), ("affine", "kpnoise"), (0, 5)),
            Group("control", control_ds, control, small + ("data.height=32", "data.width=32"),
                  ("ape", "kprpe"), ("affine", "kpnoise"), (0, 5)),
        ]
    return [
        Group("faces-main", "synthetic-faces", faces, base, every),
        Group("reid-main", "synthetic-reid", reid, base, every),
        Group("faces-cls", "synthetic-faces", faces, cls, ("irpe", "kprpe", "ape_aligned")),
        Group("reid-cls", "synthetic-reid", reid, cls, ("irpe", "kprpe", "ape_aligned")),
        Group("faces-noaug", "synthetic-faces", faces, base + ("data.augment=none",), ("irpe", "kprpe")),
        Group("reid-noaug", "synthetic-reid", reid, base + ("data.augment=none",), ("irpe", "kprpe")),
        Group("control", control_ds, control, base, ("ape", "irpe", "kprpe", "ape_aligned"),
              ("affine", "kpnoise")),
        Group("control-local", local_ds, control, base, ("ape", "irpe", "kprpe", "ape_aligned"),
              ("affine", "kpnoise"), spread=LOCAL_SPREAD),
        Group("control-cls", control_ds, control, cls, ("kprpe",), ("affine", "kpnoise")),
    ]


def ensure_control(root: Path, tiny: bool, spread: int | None = None) -> None:
    """Generate the positive-control set into ``root`` unless a complete one is there."""
    if (root / "manifest.json").is_file():
        return
    if tiny:
        generate_keypoint_control(root, num_ids=12, images_per_id=4, size=32, cell=4, patterns=3,
                                  spread=spread)
    else:
        generate_keypoint_control(root, spread=spread)


def train_one(cfg: RunConfig, run_dir: Path) -> Path:
    """The complete run in ``run_dir``: reused, resumed from its checkpoint, or trained. A
    recorded run made with another recipe is an error (never silently reused)."""
    if (run_dir / CONFIG).is_file():
        changed = check_resume(read_run_config(run_dir / CONFIG), cfg, run_dir)
        if "train.epochs" in changed:
            raise ReidbenchError(f"{run_dir} was recorded with train.epochs={changed['train.epochs'][0]}, "
                                 f"this study asks for {changed['train.epochs'][1]}; use another --out")
    if (run_dir / METRICS).is_file():
        return run_dir
    if (run_dir / CONFIG).is_file() and not (run_dir / CHECKPOINT).is_file():
        # killed (not interrupted: the engine cleans up after those) before its first checkpoint:
        # nothing to resume; remove what the run wrote and train it again
        if not remove_unfinished(run_dir):
            raise ReidbenchError(f"{run_dir} stopped before its first checkpoint and holds files no run "
                                 "wrote; move them away to train it again")
        log.info("%s stopped before its first checkpoint: training it again", run_dir.name)
    if (run_dir / CONFIG).is_file():
        log.info("resuming %s", run_dir.name)
        run_experiment(resume_config(run_dir, {}), run_dir, resume=True)
        return run_dir
    log.info("training %s", run_dir.name)
    run_experiment(cfg, run_dir)
    return run_dir


def run_group(group: Group, seed: int, out: Path, data_root: str | None, device: str) -> dict[str, Any]:
    """Train the group's models for ``seed``, sweep them, measure their keypoint sensitivity;
    returns {"runs": {model: run id}, "robustness": rows, "sensitivity": rows}."""
    runs_dir = out / "runs"
    runs: dict[str, Path] = {}
    for model in group.models:
        flags: dict[str, Any] = {"output": str(runs_dir), "train": {"seed": seed, "device": device}}
        if data_root:
            flags["data"] = {"root": data_root}
        cfg = resolve_config(group.dataset, model, group.config, flags, list(group.overrides))
        runs[model] = train_one(cfg, runs_dir / f"{group.name}-{model}-s{seed}")
    def with_weights() -> list[ModelSource]:
        """The runs as sweepable sources; only called to compute what is not recorded yet, so
        the committed records (no checkpoints) regenerate the report."""
        return [source_from_run(runs[m]) for m in group.models]

    report_id = f"{group.name}-s{seed}"
    sweep_dir = out / "robustness"
    csv_path = report_paths(sweep_dir, report_id)["csv"]
    recorded = read_csv(csv_path) if csv_path.is_file() else []
    spec = SweepSpec(group.perturbations, group.severities, "query", 0)
    skipped = read_json(csv_path.with_suffix(".json")).get("skipped", {}) if recorded else {}
    wanted = tuple(p for p in group.perturbations if p not in skipped)  # e.g. kpnoise without keypoints
    if not recorded or missing_blocks(recorded, [p.name for p in runs.values()], wanted):
        extend_sweep(with_weights(), spec, sweep_dir, report_id=report_id, data_root=data_root, device=device,
                     command="scripts/experiments/misalignment.py")
    rows = read_csv(csv_path)  # always the record: a resumed study reports exactly the same
    sens_path = out / "sensitivity" / f"{report_id}.json"
    record = read_json(sens_path) if sens_path.is_file() else None
    sens = list(record["rows"]) if record else []
    lacking = [m for m in group.models if runs[m].name not in {r["run_id"] for r in sens}]
    if lacking:
        levels = tuple(s for s in group.severities if s > 0)
        sens += sensitivity_rows([source_from_run(runs[m]) for m in lacking], levels, data_root=data_root,
                                 device=device)
        order = {runs[m].name: i for i, m in enumerate(group.models)}
        sens.sort(key=lambda r: order.get(r["run_id"], len(order)))  # stable: severities stay
        write_sensitivity(sens, sens_path.parent, report_id, command="scripts/experiments/misalignment.py",
                          overwrite=True, extends=record["meta"] if record else None)
        sens = read_json(sens_path)["rows"]
    params = {m: int(read_json(p / METRICS)["params"]) for m, p in runs.items()}
    return {"runs": {m: p.name for m, p in runs.items()}, "params": params, "robustness": rows,
            "sensitivity": sens}


def parse_models(values: list[str]) -> dict[str | None, set[str]]:
    """``--models`` values -> {group or None (every other group): models}."""
    chosen: dict[str | None, set[str]] = {}
    for value in values:
        group, sep, names = value.rpartition("=")
        key = group.strip() if sep else None
        if sep and not key:
            raise ReidbenchError(f"--models {value!r}: expected GROUP=MODEL,... or MODEL,...")
        if key in chosen:
            raise ReidbenchError(f"--models: {'group ' + key if key else 'the default'} is given twice")
        models = {m.strip() for m in names.split(",") if m.strip()}
        if not models:
            raise ReidbenchError(f"--models {value!r}: no model named")
        chosen[key] = models
    return chosen


def keep_models(groups: list[Group], chosen: dict[str | None, set[str]]) -> list[Group]:
    """``groups`` with only the chosen models (``parse_models``; the others recorded as
    skipped); groups left with none are dropped. Unknown groups or models are an error."""
    names = {g.name for g in groups}
    if unknown_groups := {k for k in chosen if k is not None} - names:
        raise ReidbenchError(f"--models: unknown groups {sorted(unknown_groups)}; "
                             f"expected some of {sorted(names)}")
    known = {m for g in groups for m in g.models}
    if unknown := set().union(*chosen.values()) - known:
        raise ReidbenchError(f"--models: unknown models {sorted(unknown)}; expected some of {sorted(known)}")
    kept = []
    for g in groups:
        wanted = chosen.get(g.name, chosen.get(None))
        if wanted is None:
            kept.append(g)
            continue
        kept.append(replace(g, models=tuple(m for m in g.models if m in wanted),
                            skipped=tuple(m for m in g.models if m not in wanted)))
    return [g for g in kept if g.models]


def chance_level(run_dirs: list[Path], data_root: str | None, task: str) -> float:
    """The headline metric of random rankings on the test split the runs of one group share:
    0.5 accuracy for verification, else the expected mAP (``metrics.chance``) of the split
    rebuilt from the records (config.yaml) only."""
    if task == "verification":
        return CHANCE_ACCURACY
    recorded = [ModelSource(read_run_config(d / CONFIG), d / CHECKPOINT, d.name) for d in run_dirs]
    split = build_dataset(shared_data_config(recorded, data_root))
    if not isinstance(split, ReidSplit):
        raise ReidbenchError(f"{run_dirs[0].name}: a re-ID sweep of a dataset without a re-ID split")
    q, g = split.query, split.gallery
    return chance_map(np.array([r.pid for r in q]), np.array([r.pid for r in g]),
                      np.array([r.camid for r in q]), np.array([r.camid for r in g]))


def interval(values: list[float]) -> dict[str, Any]:
    """Mean and 95 % Student-t interval over seeds (None bounds for fewer than 2 values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = T975[n - 2] if n - 1 <= len(T975) else 1.96
    half = t * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def scores(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{run id: {"clean": headline value, perturbation: robustness score, "top:" + perturbation:
    headline value at that perturbation's top severity}}, with "mean" and "top:mean" over the
    single perturbations (SINGLE; not affine_kpnoise, which combines two of them). The score is
    the mean over severities > 0 of perturbed / clean headline
    metric (as ``reidbench robustness``); the top-severity value is absolute, what a user gets
    when alignment fails worst (a model can keep its ratio by being bad on clean images too)."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        task = str(r["task"])
        if r["metric"] != HEADLINE.get(task, r["metric"]):
            continue
        entry = out.setdefault(str(r["run_id"]), {"ratios": {}, "top": {}})
        entry["clean"] = float(r["clean"])
        severity, pert = int(r["severity"]), str(r["perturbation"])
        if severity > 0 and r["ratio"] not in (None, ""):
            entry["ratios"].setdefault(pert, []).append(float(r["ratio"]))
        if severity > 0 and r["value"] not in (None, "") and severity >= entry["top"].get(pert, (0, 0.0))[0]:
            entry["top"][pert] = (severity, float(r["value"]))
    for entry in out.values():
        ratios, top = entry.pop("ratios"), entry.pop("top")
        entry.update({p: sum(v) / len(v) for p, v in ratios.items()})
        single = [p for p in ratios if p in SINGLE]
        if single:
            entry["mean"] = sum(entry[p] for p in single) / len(single)
        entry.update({f"top:{p}": value for p, (_, value) in top.items()})
        single = [p for p in top if p in SINGLE]
        if single:
            entry["top:mean"] = sum(top[p][1] for p in single) / len(single)
    return out


def summarise(groups: list[Group], results: dict[str, dict[int, dict[str, Any]]],
              chances: dict[str, float]) -> dict[str, Any]:
    """Per group and model: intervals over seeds of the clean metric, each robustness score and
    the kpnoise sensitivity at the top severity; and REFERENCE minus every other model, paired
    by seed."""
    summary: dict[str, Any] = {}
    for group in groups:
        per_seed = results.get(group.name, {})
        if not per_seed:
            continue
        table: dict[str, dict[str, list[float]]] = {m: {} for m in group.models}
        params: dict[str, int] = {}
        for res in per_seed.values():
            params.update(res["params"])  # one architecture per model and group: same every seed
            by_run = scores(res["robustness"])
            top = max(int(r["severity"]) for r in res["sensitivity"]) if res["sensitivity"] else None
            for model, run_id in res["runs"].items():
                for key, value in by_run.get(run_id, {}).items():
                    table[model].setdefault(key, []).append(value)
                for r in res["sensitivity"]:
                    if r["run_id"] == run_id and r["severity"] == top:
                        table[model].setdefault("kp_sensitivity", []).append(float(r["embedding_change"]))
        models = {m: {k: interval(v) for k, v in cols.items()} for m, cols in table.items()}
        paired: dict[str, Any] = {}
        if REFERENCE in table:
            for model in group.models:
                if model == REFERENCE:
                    continue
                paired[model] = {k: interval([a - b for a, b in zip(table[REFERENCE][k], table[model][k])])
                                 for k in table[REFERENCE] if k in table[model] and k != "kp_sensitivity"}
        summary[group.name] = {"dataset": group.dataset, "recipe": group.config.name,
                               "overrides": list(group.overrides), "seeds": sorted(per_seed),
                               "models": models, "params": params, "chance": chances[group.name],
                               "skipped": list(group.skipped),
                               f"{REFERENCE}_minus": paired}
    return summary


def _ci(cell: dict[str, Any] | None, signed: bool = False) -> str:
    if not cell:
        return "-"
    fmt = "+.3f" if signed else ".3f"
    if cell["low"] is None:
        return format(cell["mean"], fmt)
    return f"{cell['mean']:{fmt}} [{cell['low']:{fmt}}, {cell['high']:{fmt}}]"


def _ci_rows(cells: dict[str, dict[str, Any]], keys: list[str], signed: bool = False) -> list[str]:
    """One markdown row per model: its name, then ``_ci`` of each of ``keys``."""
    return [f"| {model} | " + " | ".join(_ci(cols.get(k), signed) for k in keys) + " |"
            for model, cols in cells.items()]


def at_chance(clean: dict[str, Any] | None, chance: float) -> bool:
    """The clean metric cannot be told apart from random rankings: its interval reaches the
    chance level (or, with one seed, it is within 10 % of it)."""
    if not clean:
        return False
    if clean["low"] is None:
        return clean["mean"] <= 1.1 * chance
    return clean["low"] <= chance


def unlearned(group: dict[str, Any], models: tuple[str, ...]) -> list[str]:
    """Those of ``models`` whose clean metric in the summarised ``group`` is at chance."""
    return [m for m in models if at_chance(group["models"][m].get("clean"), group["chance"])]


def verdict(cell: dict[str, Any], unlearned: list[str] | None = None) -> str:
    if unlearned:
        verb = "ranks" if len(unlearned) == 1 else "rank"
        return (f"not comparable: {' and '.join(unlearned)} {verb} at chance on clean images, so "
                "robustness ratios compare noise with noise")
    if cell["low"] is None:
        return "one seed: no interval"
    if cell["low"] > 0:
        return "KP-RPE better, beyond the seed noise"
    if cell["high"] < 0:
        return "KP-RPE worse, beyond the seed noise"
    return "within the seed noise"


def absolute_section(g: dict[str, Any], perts: list[str]) -> list[str]:
    """The headline metric at each perturbation's top severity, per model and as REFERENCE minus
    each model (paired by seed): the comparison the paper makes (who is better when alignment
    fails), where the ratios above say only who loses less of its own clean score."""
    tops = [p for p in perts if any(f"top:{p}" in m for m in g["models"].values())]
    if not tops:
        return []
    head = "| model | clean | " + " | ".join(tops) + " |"
    rule = "|---|---|" + "---|" * len(tops)
    lines = ["", "Headline metric at the top severity (absolute, not a ratio):", "", head, rule]
    keys = ["clean", *(f"top:{p}" for p in tops)]
    lines += _ci_rows(g["models"], keys)
    paired = g.get(f"{REFERENCE}_minus", {})
    if paired:
        lines += ["", f"{REFERENCE} minus each model at the top severity (paired by seed):", "", head, rule]
        lines += _ci_rows(paired, keys, signed=True)
        lines.append("")
        for model, cols in paired.items():
            for p in ("kpnoise", "affine_kpnoise", "mean"):
                if f"top:{p}" in cols:
                    what = {"kpnoise": "under keypoint noise",
                            "affine_kpnoise": "under misalignment with keypoint noise",
                            "mean": "mean over the single perturbations" if "affine_kpnoise" in perts
                            else "mean over perturbations"}[p]
                    lines.append(f"- vs {model}, headline metric at the top severity, {what}: "
                                 f"{_ci(cols[f'top:{p}'], True)}: {verdict(cols[f'top:{p}'])}.")
    return lines


def combined_note(summary: dict[str, Any]) -> str:
    """What affine_kpnoise and "mean" are, where a group reports affine_kpnoise."""
    if not any("affine_kpnoise" in m for g in summary.values() for m in g["models"].values()):
        return ""
    return ("affine_kpnoise: the affine misalignment and the keypoint noise of the same severity at "
            "once (keypoints moved with the image, then off by a detector's error); mean: over the "
            "five single perturbations (scale, rotate, translate, affine, kpnoise). ")


def markdown(summary: dict[str, Any], command: str) -> str:
    """The report: one section per group (tables generated from ``summary`` only)."""
    lines = ["# Does KP-RPE survive misalignment? (issue 19)", "",
             f"Regenerate: `{command}` (resumable; reads the records under this folder).",
             "Intervals: 95 % Student t over training seeds (they do not include the evaluation "
             "noise of each seed's sweep; see the per-seed reports in robustness/).",
             "Robustness score: mean over severities 1-5 of perturbed / clean headline metric "
             "(mAP for re-ID, 10-fold accuracy for faces). " + combined_note(summary)
             + "kp sensitivity: mean 1 - cos of the "
             "embedding under keypoint noise alone at the top severity (0 = keypoints unused). "
             "params: trainable parameters as recorded in each run's metrics.json (the flatten "
             "head's Linear(N * D -> D) makes those models larger than their CLS twins: a "
             "CLS-vs-flatten difference is a difference of head and of size together). chance: "
             "the headline metric of random rankings on the test split (metrics/chance.py); a "
             "model whose clean interval reaches it learned nothing, and its robustness ratios "
             "(noise over noise) are not compared.", ""]
    choices = [(name, g) for name, g in summary.items() if "irpe" in g.get(f"{REFERENCE}_minus", {})]
    if choices:
        lines += ["## Design choices: KP-RPE minus iRPE in each recipe", "",
                  "The same difference under each recipe (head, augmentation; the model size is "
                  "another --size and --out): a choice matters where the intervals part.", "",
                  "| group | dataset | KP-RPE params | clean | mean robustness score | "
                  "kpnoise score | affine_kpnoise score | KP-RPE kp sensitivity |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, g in choices:
            diff = g[f"{REFERENCE}_minus"]["irpe"]
            sens = g["models"].get(REFERENCE, {}).get("kp_sensitivity")
            idle = unlearned(g, (REFERENCE, "irpe"))
            note = f" ({' and '.join(idle)} at chance: not comparable)" if idle else ""
            lines.append(f"| {name}{note} | {g['dataset']} | {g['params'].get(REFERENCE, '-')} | "
                         + " | ".join(_ci(diff.get(c), True)
                                      for c in ("clean", "mean", "kpnoise", "affine_kpnoise"))
                         + f" | {'-' if not sens else format(sens['mean'], '.3g')} |")
        lines.append("")
    for name, g in summary.items():
        extra = f", {', '.join(g['overrides'])}" if g["overrides"] else ""
        lines += [f"## {name}: {g['dataset']} ({g['recipe']}{extra}), seeds {g['seeds']}", "",
                  f"chance level of the clean metric: {g['chance']:.3f}", ""]
        if g.get("skipped"):
            lines += [f"Planned but not run in this record (--models): {', '.join(g['skipped'])}.", ""]
        perts = [p for p in (*PERTURBATIONS, "mean") if any(p in m for m in g["models"].values())]
        lines += ["| model | params | clean | " + " | ".join(perts) + " | kp sensitivity |",
                  "|---|---|---|" + "---|" * len(perts) + "---|"]
        for model, cols in g["models"].items():
            sens = cols.get("kp_sensitivity")
            lines.append(f"| {model} | {g['params'].get(model, '-')} | {_ci(cols.get('clean'))} | "
                         + " | ".join(_ci(cols.get(p)) for p in perts)
                         + f" | {'-' if not sens else format(sens['mean'], '.3g')} |")
        paired = g.get(f"{REFERENCE}_minus", {})
        if paired:
            lines += ["", f"{REFERENCE} minus each model (paired by seed):", "",
                      "| model | clean | " + " | ".join(perts) + " |", "|---|---|" + "---|" * len(perts)]
            lines += _ci_rows(paired, ["clean", *perts], signed=True)
            lines.append("")
            for model, cols in paired.items():
                if "mean" in cols:
                    lines.append(f"- vs {model}, mean robustness score: {_ci(cols['mean'], True)}: "
                                 f"{verdict(cols['mean'], unlearned(g, (REFERENCE, model)))}.")
        lines += absolute_section(g, perts)
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/misalignment"))
    p.add_argument("--data-root",
                   help="data root of the synthetic sets (default: $REIDBENCH_DATA, else ./datasets)")
    p.add_argument("--seeds", default=None, help="training seeds, comma-separated (default 0,1,2; --tiny: 0)")
    p.add_argument("--size", default="nano", help="model size of every run (nano, tiny, small, base)")
    p.add_argument("--only", help="groups to run, comma-separated (default: all)")
    p.add_argument("--models", action="append", default=[],
                   help="train and report only these models, comma-separated; GROUP=MODEL,... for one "
                        "group (repeatable; default: each group's plan)")
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="a minute-long smoke run (meaningless numbers)")
    args = p.parse_args(argv)
    seeds = [int(s) for s in (args.seeds or ("0" if args.tiny else "0,1,2")).split(",") if s.strip()]
    root = Path(args.data_root) if args.data_root else default_data_root(None)
    control_root = root / ("keypoint-control-tiny" if args.tiny else "keypoint-control")
    groups = plan(control_root, args.size, args.tiny)
    if args.only:
        wanted = {g.strip() for g in args.only.split(",") if g.strip()}
        unknown = wanted - {g.name for g in groups}
        if unknown:
            raise ReidbenchError(f"--only: unknown groups {sorted(unknown)}; expected some of "
                                 f"{[g.name for g in groups]}")
        groups = [g for g in groups if g.name in wanted]
    if args.models:
        groups = keep_models(groups, parse_models(args.models))
    for g in groups:
        if g.dataset.startswith("folder:"):
            ensure_control(Path(g.dataset.removeprefix("folder:")), args.tiny, g.spread)
    results: dict[str, dict[int, dict[str, Any]]] = {}
    chances: dict[str, float] = {}
    for group in groups:
        for seed in seeds:
            log.info("group %s, seed %d", group.name, seed)
            results.setdefault(group.name, {})[seed] = run_group(group, seed, args.out, args.data_root,
                                                                 args.device)
        last = results[group.name][seeds[-1]]  # every seed evaluates on the same split
        task = str(last["robustness"][0]["task"]) if last["robustness"] else "reid"
        chances[group.name] = chance_level([args.out / "runs" / r for r in last["runs"].values()],
                                           args.data_root, task)
    summary = summarise(groups, results, chances)
    given = argv if argv is not None else sys.argv[1:]
    command = "python3 scripts/experiments/misalignment.py " + " ".join(given)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "report.json", {"command": command.strip(), "groups": summary,
                                                 "runs": {g: {str(s): r["runs"] for s, r in v.items()}
                                                          for g, v in results.items()}})
    atomic_write_text(args.out / "report.md", markdown(summary, command.strip()))
    log.info("wrote %s and %s", args.out / "report.md", args.out / "report.json")
    return args.out / "report.md"


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        main()
    except ReidbenchError as exc:
        sys.stderr.write(f"misalignment: error: {exc}\n")
        sys.exit(2)
