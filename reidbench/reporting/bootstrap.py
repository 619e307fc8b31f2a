"""The hierarchical bootstrap behind every interval of the leaderboard: training seeds are
resampled, then the evaluation samples (queries or pairs) within each seed.

A robustness score (or a difference of scores) is a statistic of the per-sample values of one
trained model: the mean over severities of mean(perturbed) / mean(clean). Its uncertainty has
two sources: which seed trained the model, and which queries or pairs the evaluation happened
to contain. One replicate of the hierarchical bootstrap draws ``S`` seeds with replacement from
the ``S`` recorded ones and, for each drawn seed, ``n`` samples with replacement from its ``n``
(the same draw for every array of that seed: clean, every perturbation and severity, and the
other model of a paired comparison), computes the statistic per drawn seed and averages. The
95 % interval is the 2.5 and 97.5 percentiles of ``resamples`` replicates; the generator is
``np.random.default_rng(seed)``, so an interval is reproducible to the last digit.

With one seed the seed level has nothing to resample: the interval is the per-sample bootstrap
alone and says nothing about seed-to-seed spread (the tables say ``n_seeds``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

RESAMPLES = 1000  # bootstrap replicates of every interval
LEVEL = 0.95  # two-sided interval: percentiles 2.5 and 97.5

Arrays = dict[Hashable, np.ndarray]  # one seed's per-sample values, all of one length n
Means = dict[Hashable, np.ndarray]  # key -> (B,) means of the resampled per-sample values
Statistic = Callable[[Means], dict[str, np.ndarray]]  # -> name -> (B,) statistic values


def hierarchical_bootstrap(
    per_seed: Sequence[Arrays], statistic: Statistic, resamples: int = RESAMPLES, seed: int = 0,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates, each (resamples,), of the mean over seeds of every statistic.

    ``per_seed[s]`` maps keys to one seed's per-sample arrays (all of the same length within
    that seed); ``statistic`` receives, for each key, the (resamples,) means of the resampled
    array and returns named (resamples,) values.
    """
    if not per_seed:
        raise ValueError("no seeds to bootstrap")
    rng = np.random.default_rng(seed)
    num = len(per_seed)
    lengths = [len(next(iter(arrays.values()))) for arrays in per_seed]
    chosen = rng.integers(0, num, size=(resamples, num)) if num > 1 else np.zeros((resamples, 1), int)
    rows = np.arange(resamples)
    total: dict[str, np.ndarray] = {}
    for slot in range(num):  # each slot of a replicate draws its own samples, whichever seed it holds
        values: list[dict[str, np.ndarray]] = []
        for s, arrays in enumerate(per_seed):
            idx = rng.integers(0, lengths[s], size=(resamples, lengths[s]))  # (B, n)
            values.append(statistic({k: np.asarray(a, np.float64)[idx].mean(1)
                                     for k, a in arrays.items()}))
        for name in values[0]:
            stacked = np.stack([v[name] for v in values])  # (S, B)
            total[name] = total.get(name, 0.0) + stacked[chosen[:, slot], rows]
    return {name: t / num for name, t in total.items()}


def interval(replicates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of ``replicates`` at ``level`` (two-sided)."""
    tail = (1.0 - level) / 2 * 100
    return float(np.percentile(replicates, tail)), float(np.percentile(replicates, 100 - tail))
