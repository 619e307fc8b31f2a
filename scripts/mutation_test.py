"""Mutation testing of reidbench's core modules with mutmut, in a throw-away copy of a commit.

A mutant is the code with one small change (``<`` for ``<=``, ``+1`` for ``-1``, an argument
dropped, a value replaced by ``None``...). A test suite that defends a module makes some test
fail for every mutant that changes the module's behaviour; a mutant that every test survives
is either a gap in the tests or an *equivalent* mutant (a change of code that is no change of
behaviour). This script measures that, per core module, so gaps show up as a list of diffs.

How it runs:

- The commit (``--commit``, default ``HEAD``) is exported with ``git archive`` into a temporary
  folder (``--workdir``); the working tree it comes from is never touched, nor its git state.
  ``shared/`` (the test data beside the checkout) is linked into the copy; ``--add-tests``
  copies extra test files (e.g. new, uncommitted ones) into the copy's ``tests/``.
- For each module of ``MODULES`` (or those named with ``--modules``) mutmut mutates only that
  file (or only the listed functions of it) and runs only the tests the mapping names for it;
  among those, mutmut runs for each mutant only the tests that executed the mutated function
  (it records that in a first, clean run). Test files missing at the commit are skipped.
  The project's pytest options apply (``-m 'not slow'``).
- Error and log message text is not mutated (``DO_NOT_MUTATE``): a mutant there changes only
  the words of a message. The conditions that decide whether to raise or log are mutated.
- Functions with a decorator other than ``@staticmethod``/``@classmethod`` are never mutated by
  mutmut, nor is module-level code (constants, class bodies).
- Tests that read a module's source text (``DESELECT``) are left out: under mutmut they read
  the generated mutants and fail with no mutant active.
- Only tests that run in the pytest process can kill a mutant: a test that starts
  ``python -m reidbench`` in a subprocess runs the unmutated copy.
- Everything runs at low priority (``--nice``, default 15) with one worker (``--max-children``)
  and one thread per process, so the machine stays usable.

Output (``--out``, default ``results/mutation/<short sha>``): ``mutation.json`` (every count,
every surviving mutant with its diff, the test files used, the seconds taken) and
``mutation.md`` (the per-module table and the survivors' diffs).

Statuses: *killed* (a test failed), *timeout* (the tests ran past mutmut's CPU limit or were
killed by a signal: the mutant was detected), *survived* (every test passed), *no tests* (no
mapped test executes the mutated function: survived without a fight). Score = (killed +
timeout) / mutants.

``--reuse-kills REPORT.json`` takes the mutants an earlier report of the same commit killed
(only for modules whose source is byte-identical) and runs only the others: adding tests can
only kill more mutants, so this gives the same numbers as a full run after new tests are added,
in a fraction of the time.

Runtime: about 0.3-0.5 s per mutant on one core for fast tests (pytest started in a forked,
pre-warmed process), several seconds for mutants that survive slow tests. All modules at one
commit: roughly an hour on one core of a 2-core machine (see the report's ``seconds``). Not
part of CI.

Usage::

    pip install 'mutmut>=3.8,<4'
    python3 scripts/mutation_test.py --commit HEAD --out results/mutation/head
    python3 scripts/mutation_test.py --commit HEAD --modules rank,sampler --keep
    python3 scripts/mutation_test.py --commit HEAD --add-tests tests/test_mutants_rank.py \\
        --reuse-kills results/mutation/head/mutation.json --out results/mutation/head-new
    python3 scripts/mutation_test.py --merge a/mutation.json b/mutation.json --out both
    python3 scripts/mutation_test.py --list
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("mutation_test")

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Module:
    """One core module: the file mutated, the functions mutated (all when empty) and the test
    files (relative to the repository root) that exercise it."""

    path: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()


# Checkpoint and resume: the checkpoint tests, the run records, and of the CLI tests (each trains
# a tiny model, again for every mutant) only those that resume.
RESUME_TESTS = (
    "tests/test_checkpoint_safety.py", "tests/test_run_records.py",
    "tests/test_cli.py::test_interrupted_run_resumes_to_the_same_result",
    "tests/test_cli.py::test_resume_continues_from_the_checkpoint_state",
    "tests/test_mutants_checkpoint.py",
    # mapped after 99219b7: the unit tests of snapshot/restore (CUDA RNG simulated) and the
    # loader's sampler seed
    "tests/test_mutants_resume.py", "tests/test_trainer_sampler_seed.py",
)

# The promise each module keeps is defended by these tests (a file, or file::test); one missing
# at a commit is skipped. Keep each list to tests that run in seconds: every surviving mutant
# runs all of the tests that touch its function.
MODULES: dict[str, Module] = {
    "rank": Module("reidbench/metrics/rank.py", (
        "tests/test_metrics_rank.py", "tests/test_topk_exact.py", "tests/test_metric_guards.py",
        "tests/test_mutants_rank.py",
    )),
    "verification": Module("reidbench/metrics/verification.py", (
        "tests/test_metrics_verification.py", "tests/test_tar_conventions.py",
        "tests/test_metric_guards.py", "tests/test_mutants_verification.py",
    )),
    "rel_index": Module("reidbench/layers/rel_index.py", (
        "tests/test_irpe.py", "tests/test_rpe.py", "tests/test_attention_reference.py",
        "tests/test_mutants_rel_index.py",
    )),
    "kprpe": Module("reidbench/layers/kprpe.py", (
        "tests/test_kprpe.py", "tests/test_attention_reference.py",
        "tests/test_mutants_kprpe.py",
    )),
    "bucket_attention": Module("reidbench/layers/bucket_attention.py", (
        "tests/test_bucket_attention.py", "tests/test_attention_reference.py",
        "tests/test_irpe.py", "tests/test_kprpe.py", "tests/test_mutants_bucket_attention.py",
        "tests/test_bucket_attention_precision.py",  # the bf16/fp16 paths (mapped after 99219b7)
    )),
    "attention": Module("reidbench/layers/attention.py", (
        "tests/test_attention_reference.py", "tests/test_irpe.py", "tests/test_kprpe.py",
        "tests/test_rpe.py", "tests/test_mutants_attention.py",
    )),
    "sampler": Module("reidbench/data/sampler.py", (
        "tests/test_sampler.py", "tests/test_mutants_sampler.py",
    )),
    "perturb": Module("reidbench/data/perturb.py", (
        "tests/test_perturb.py", "tests/test_perturb_distribution.py",
        "tests/test_mutants_perturb.py",
    )),
    "checkpoint": Module("reidbench/engine/checkpoint.py", RESUME_TESTS),
    # the resume path only: snapshot, restore and the run-level resume logic
    "trainer_resume": Module("reidbench/engine/trainer.py", RESUME_TESTS,
                             ("train", "_snapshot", "_restore", "_move_optimizer")),
    "run_resume": Module("reidbench/engine/run.py", RESUME_TESTS + (
        "tests/test_cli.py::test_resume_refuses_to_change_the_recipe",
        "tests/test_cli.py::test_resume_accepts_settings_that_agree_with_the_record",
        "tests/test_mutants_run.py",  # written for the survivors of the first run_resume run
    ), ("find_resume_dir", "resume_request", "resume_config", "check_resume",
        "run_experiment", "_execute")),
    "records": Module("reidbench/reporting/records.py", (
        "tests/test_run_records.py", "tests/test_reporting.py", "tests/test_mutants_records.py",
    )),
}

# Tests that read the module's source text: under mutmut they read the generated mutants, not
# the module, and fail without any mutant active.
DESELECT = [
    "tests/test_checkpoint_safety.py::test_no_module_loads_a_file_unsafely",
]

# Lines whose statements are not mutated: the text of errors, warnings and log records.
DO_NOT_MUTATE = [
    r"^\s*raise\s+\w+\(",
    r"^\s*(log|logger|_log|logging)\.(debug|info|warning|error|exception|critical)\(",
    r"^\s*warnings\.warn\(",
]

# mutmut's exit codes per mutant, folded into the columns of the report.
STATUS = {1: "killed", 3: "killed", 37: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
          -9: "timeout", -11: "timeout", 34: "skipped", None: "not run"}

DIFF_CODE = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
path, names = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps({n: get_diff_for_mutant(n, path=path) for n in names}))
"""


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def export_commit(sha: str, dest: Path) -> None:
    """The commit's tree, as ``git archive`` gives it, extracted into ``dest``."""
    dest.mkdir(parents=True)
    proc = subprocess.Popen(["git", "archive", "--format=tar", sha], cwd=REPO,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        tar.extractall(dest, filter="data")
    if proc.wait():
        raise SystemExit(f"git archive {sha} failed")


def mutmut_config(module: Module, tests: list[str]) -> str:
    """The ``[mutmut]`` section of setup.cfg for one module (the copy's pyproject.toml must not
    have a ``[tool.mutmut]`` table: ``prepare_copy`` removes it)."""
    def lines(values: list[str]) -> str:
        return "".join(f"\n    {v}" for v in values)
    return (
        "[mutmut]\n"
        "source_paths = reidbench\n"
        f"only_mutate = {module.path}\n"
        f"pytest_add_cli_args_test_selection ={lines(tests)}\n"
        # pytest's unraisable-exception plugin runs gc.collect() five times per session:
        # seconds per mutant in a process holding torch, for nothing mutmut reads.
        "pytest_add_cli_args ="
        + lines(["-p", "no:cacheprovider", "-p", "no:unraisableexception", "-p", "no:randomly"]
                + [f"--deselect={t}" for t in DESELECT])
        + "\n"
        f"also_copy ={lines(['configs', 'datasets', 'results', 'benchmarks', 'README.md'])}\n"
        f"do_not_mutate_patterns ={lines(DO_NOT_MUTATE)}\n"
        "process_isolation = forkserver\n"
        "use_git_change_detection = false\n"
        "use_setproctitle = false\n"
    )


def prepare_copy(sha: str, copy: Path, add_tests: list[Path]) -> None:
    export_commit(sha, copy)
    shared = REPO.parent / "shared"
    if shared.is_dir():  # tests find their data at <checkout>/../shared; mutmut runs in mutants/
        (copy / "shared").symlink_to(shared.resolve())
    for test in add_tests:
        shutil.copy2(test, copy / "tests" / test.name)
    pyproject = copy / "pyproject.toml"
    if pyproject.is_file():
        kept, skipping = [], False
        for line in pyproject.read_text().splitlines():
            if line.startswith("["):
                skipping = line.strip() == "[tool.mutmut]"
            if not skipping:
                kept.append(line)
        pyproject.write_text("\n".join(kept) + "\n")


def test_exists(copy: Path, test: str) -> bool:
    """``tests/x.py`` or ``tests/x.py::test_name`` exists in the copy."""
    path, _, name = test.partition("::")
    if not (copy / path).is_file():
        return False
    return not name or f"def {name}(" in (copy / path).read_text()


def source_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mangled(module: Module, function: str) -> str:
    dotted = module.path.removesuffix(".py").replace("/", ".")
    return f"{dotted}.x_{function}__mutmut_*"


def run_module(name: str, module: Module, copy: Path, args: argparse.Namespace,
               reuse: dict[str, Any] | None) -> dict[str, Any]:
    """Mutate one module in ``copy`` and run its tests; the module's row of the report."""
    src = copy / module.path
    row: dict[str, Any] = {"module": name, "path": module.path}
    if not src.is_file():
        log.warning("%s: %s does not exist at this commit", name, module.path)
        return {**row, "missing": True}
    tests = [t for t in module.tests if test_exists(copy, t)]
    row.update(tests=tests, skipped_tests=[t for t in module.tests if t not in tests],
               functions=list(module.functions), sha256=source_hash(src))
    if not tests:
        log.warning("%s: none of its test files exist at this commit", name)
        return {**row, "missing": True}
    shutil.rmtree(copy / "mutants", ignore_errors=True)
    (copy / "setup.cfg").write_text(mutmut_config(module, tests))

    selection = [mangled(module, f) for f in module.functions]
    killed_before: set[str] = set()
    if reuse and reuse.get("sha256") == row["sha256"]:
        killed_before = set(reuse.get("killed_names", []))
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MUTANT_UNDER_TEST", None)
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.max_children)]
    to_run = selection
    if killed_before:  # generate mutants, then run only those the earlier report did not kill
        to_run = sorted(n for n in generate_names(copy, env, module, selection)
                        if n not in killed_before)
    log.info("%s: mutating %s%s against %s", name, module.path,
             f" ({', '.join(module.functions)})" if module.functions else "", " ".join(tests))
    start = time.monotonic()
    logfile = copy.parent / f"{name}.log"
    if to_run or not killed_before:
        with logfile.open("w") as fh:
            proc = subprocess.run(cmd + to_run, cwd=copy, env=env, stdout=fh,
                                  stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(args.nice))
        if proc.returncode:
            tail = logfile.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{name}: mutmut failed (exit {proc.returncode}); see {logfile}:\n{tail}")
    row["seconds"] = round(time.monotonic() - start, 1)
    meta = copy / "mutants" / (module.path + ".meta")
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    if module.functions:
        import fnmatch
        codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, p) for p in selection)}
    for k in killed_before & codes.keys():
        codes[k] = 1
    statuses = {k: STATUS.get(v, "timeout" if v is not None and v < 0 else "suspicious")
                for k, v in codes.items()}
    counts = Counter(statuses.values())
    total = len(statuses)
    detected = counts["killed"] + counts["timeout"]
    row.update(
        mutants=total, killed=counts["killed"], timeout=counts["timeout"],
        survived=counts["survived"], no_tests=counts["no tests"],
        other={k: v for k, v in counts.items()
               if k not in ("killed", "timeout", "survived", "no tests")},
        score=round(detected / total, 4) if total else None,
        killed_names=sorted(k for k, s in statuses.items() if s in ("killed", "timeout")),
    )
    left = sorted((k for k, s in statuses.items() if s in ("survived", "no tests")),
                  key=lambda k: (k.rsplit("__mutmut_", 1)[0], int(k.rsplit("_", 1)[1])))
    diffs = json.loads(subprocess.run(
        [sys.executable, "-c", DIFF_CODE, module.path, json.dumps(left)], cwd=copy, env=env,
        check=True, capture_output=True, text=True).stdout) if left else {}
    row["survivors"] = [{"name": k, "status": statuses[k], "diff": short_diff(diffs[k])}
                        for k in left]
    log.info("%s: %d mutants, %d killed, %d timeout, %d survived, %d no tests (%.0f s)", name,
             total, counts["killed"], counts["timeout"], counts["survived"], counts["no tests"],
             row["seconds"])
    if not args.keep:
        shutil.rmtree(copy / "mutants", ignore_errors=True)
    return row


def generate_names(copy: Path, env: dict[str, str], module: Module,
                   selection: list[str]) -> list[str]:
    """The mutant names of ``module`` (mutmut writes them while generating mutants)."""
    import fnmatch
    code = ("import sys; from mutmut.__main__ import *; from mutmut.utils.file_utils import *;"
            "import os; os.makedirs('mutants', exist_ok=True); copy_src_dir(); copy_also_copy_files();"
            "create_mutants(1)")
    subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, check=True,
                   capture_output=True)
    meta = copy / "mutants" / (module.path + ".meta")
    names = list(json.loads(meta.read_text())["exit_code_by_key"])
    if selection:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in selection)]
    return names


def short_diff(diff: str) -> str:
    """The changed lines of a mutmut diff (without the file headers and context)."""
    keep = [line for line in diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return "\n".join(keep)


def write_report(report: dict[str, Any], out: Path) -> None:
    (out / "mutation.json").write_text(json.dumps(report, indent=1) + "\n")
    rows = [r for r in report["modules"] if not r.get("missing")]
    lines = [
        f"# Mutation testing at {report['commit'][:12]}",
        "",
        f"mutmut {report['mutmut']}, {report['python']}, {report['date']}; "
        f"{report['seconds']:.0f} s in all on one core (nice {report['nice']}).",
        "",
        "| module | file | mutants | killed | timeout | survived | no tests | score |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        where = r["path"] + (f" ({', '.join(r['functions'])})" if r["functions"] else "")
        lines.append(f"| {r['module']} | {where} | {r['mutants']} | {r['killed']} | "
                     f"{r['timeout']} | {r['survived']} | {r['no_tests']} | "
                     f"{100 * r['score']:.1f}% |" if r["score"] is not None else "| - |")
    total = {k: sum(r[k] for r in rows) for k in ("mutants", "killed", "timeout", "survived",
                                                  "no_tests")}
    if total["mutants"]:
        score = (total["killed"] + total["timeout"]) / total["mutants"]
        lines.append(f"| **all** | | {total['mutants']} | {total['killed']} | {total['timeout']} | "
                     f"{total['survived']} | {total['no_tests']} | {100 * score:.1f}% |")
    missing = [r["module"] for r in report["modules"] if r.get("missing")]
    if missing:
        lines += ["", f"Not at this commit: {', '.join(missing)}."]
    lines += ["", "## Tests per module", ""]
    for r in rows:
        skipped = f" (not at this commit: {', '.join(r['skipped_tests'])})" if r["skipped_tests"] else ""
        lines.append(f"- {r['module']}: {', '.join(r['tests'])}{skipped}")
    lines += ["", "## Surviving mutants", ""]
    for r in rows:
        if not r["survivors"]:
            continue
        lines += [f"### {r['module']} ({len(r['survivors'])})", "", "```diff"]
        for s in r["survivors"]:
            tag = " [no tests]" if s["status"] == "no tests" else ""
            lines.append(f"# {s['name'].rsplit('.', 1)[-1]}{tag}")
            lines.append(s["diff"])
        lines += ["```", ""]
    (out / "mutation.md").write_text("\n".join(lines) + "\n")


def merge_reports(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several of the same commit: module rows in ``MODULES`` order, a module
    measured twice taken from the later report; seconds added up."""
    commits = {r["commit"] for r in reports}
    if len(commits) != 1:
        raise SystemExit(f"--merge: reports of different commits {sorted(commits)}")
    rows: dict[str, dict[str, Any]] = {}
    for report in reports:
        rows.update({row["module"]: row for row in report["modules"]})
    order = [m for m in MODULES if m in rows] + [m for m in rows if m not in MODULES]
    merged = {**reports[-1], "modules": [rows[m] for m in order],
              "seconds": round(sum(r.get("seconds", 0.0) for r in reports), 1)}
    merged["added_tests"] = sorted({t for r in reports for t in r.get("added_tests", [])})
    return merged


def compare_reports(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A markdown table of each module's counts in two reports (e.g. before and after a change
    to the tests), in ``MODULES`` order; a module one report lacks is marked not measured."""
    rows_b = {r["module"]: r for r in before["modules"]}
    rows_a = {r["module"]: r for r in after["modules"]}

    def cell(row: dict[str, Any] | None) -> list[str]:
        if row is None:
            return ["not measured"] + [""] * 3
        return [str(row["mutants"]), str(row["survived"]), str(row["no_tests"]),
                f"{100 * row['score']:.1f}%"]

    names = [m for m in MODULES if m in rows_b or m in rows_a]
    lines = [f"| module | before ({before['commit'][:7]}): mutants | survived | no tests | score "
             f"| after ({after['commit'][:7]}): mutants | survived | no tests | score |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in names:
        lines.append("| " + " | ".join([name, *cell(rows_b.get(name)), *cell(rows_a.get(name))])
                     + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", default="HEAD", help="commit to test (default HEAD)")
    parser.add_argument("--out", help="report folder (default results/mutation/<short sha>)")
    parser.add_argument("--modules", help="comma-separated names from MODULES (default all)")
    parser.add_argument("--add-tests", nargs="*", default=[], type=Path,
                        help="test files copied into the copy's tests/ (e.g. uncommitted ones)")
    parser.add_argument("--reuse-kills", type=Path,
                        help="an earlier mutation.json of the same commit: its kills are kept")
    parser.add_argument("--workdir", type=Path, help="where the copy goes (default a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the copy and mutants/ folders")
    parser.add_argument("--max-children", type=int, default=1, help="mutmut workers (default 1)")
    parser.add_argument("--nice", type=int, default=15, help="niceness of the runs (default 15)")
    parser.add_argument("--list", action="store_true", help="print the module/test mapping")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="REPORT",
                        help="combine the modules of mutation.json reports of one commit into "
                             "--out (later reports win), without running anything")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="print the per-module table of two mutation.json reports")
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        sys.stdout.write(compare_reports(before, after))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    if args.merge:
        if not args.out:
            parser.error("--merge needs --out")
        merged = merge_reports([json.loads(p.read_text()) for p in args.merge])
        Path(args.out).mkdir(parents=True, exist_ok=True)
        write_report(merged, Path(args.out))
        log.info("report: %s", Path(args.out) / "mutation.md")
        return 0

    if args.list:
        for name, m in MODULES.items():
            funcs = f" [{', '.join(m.functions)}]" if m.functions else ""
            sys.stdout.write(f"{name}: {m.path}{funcs}\n    " + "\n    ".join(m.tests) + "\n")
        return 0
    names = args.modules.split(",") if args.modules else list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    try:
        import mutmut
    except ImportError:
        parser.error("mutmut is not installed: pip install 'mutmut>=3.8,<4'")
    missing_tests = [t for t in args.add_tests if not t.is_file()]
    if missing_tests:
        parser.error(f"--add-tests: no such file {missing_tests[0]}")
    sha = git("rev-parse", "--verify", f"{args.commit}^{{commit}}")
    out = Path(args.out or REPO / "results" / "mutation" / sha[:7])
    out.mkdir(parents=True, exist_ok=True)
    args.out = str(out)
    reuse: dict[str, dict[str, Any]] = {}
    if args.reuse_kills:
        earlier = json.loads(args.reuse_kills.read_text())
        reuse = {r["module"]: r for r in earlier["modules"] if not r.get("missing")}

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reidbench-mutation-"))
    copy = workdir / "repo"
    log.info("commit %s -> %s", sha[:12], copy)
    prepare_copy(sha, copy, args.add_tests)
    start = time.monotonic()
    report: dict[str, Any] = {
        "commit": sha, "mutmut": getattr(mutmut, "__version__", "?"),
        "python": f"Python {sys.version.split()[0]}", "date": time.strftime("%Y-%m-%d"),
        "nice": args.nice, "max_children": args.max_children,
        "added_tests": [t.name for t in args.add_tests],
        "reused_kills_from": str(args.reuse_kills) if args.reuse_kills else None,
        "do_not_mutate": DO_NOT_MUTATE, "modules": [],
    }
    try:
        for name in names:
            report["modules"].append(run_module(name, MODULES[name], copy, args, reuse.get(name)))
            report["seconds"] = round(time.monotonic() - start, 1)
            write_report(report, out)  # after each module: a long run can be read as it goes
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    log.info("report: %s", out / "mutation.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
