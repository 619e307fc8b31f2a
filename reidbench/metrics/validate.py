"""The last check before a metric is written or shown: every value must be possible.

``check_metrics`` walks a metrics dict (nested dicts and lists included) and raises
ReidbenchError naming the first impossible entry: a fraction (mAP, mINP, CMC, accuracy, AUC,
EER, TAR, ...) outside [0, 1], a CMC that decreases, a count that is not a non-negative integer,
a negative duration, or any number that is NaN or infinite. Keys it does not know only have to
be finite. Strings, booleans and None (a rate the data cannot measure) are allowed anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from reidbench.errors import ReidbenchError

# values (or, for dicts and lists, every value inside) that are fractions in [0, 1]
FRACTIONS = frozenset({
    "mAP", "mINP", "rank1", "rank5", "rank10", "rank20", "cmc", "mAP_at_k",
    "queries_with_all_positives_in_top_k", "accuracy", "accuracy_std", "auc", "eer",
    "tar_at_far", "tar_at_far_nearest", "tar_at_far_1e-2", "lambda",
})
# non-negative integers
COUNTS = frozenset({
    "num_valid_queries", "num_skipped_queries", "num_query", "num_gallery", "num_pairs",
    "num_folds", "num_genuine", "num_templates", "params", "trainable_params", "epochs",
    "truncated_at_k", "k1", "k2", "num_samples",
})


def check_metrics(metrics: Mapping[str, Any], where: str = "metrics") -> None:
    """Raise ReidbenchError if any entry of ``metrics`` is impossible (see the module doc).

    ``where`` names the record in the message, e.g. ``"metrics of run X"``.
    """
    for key, value in metrics.items():
        _check(str(key), value, None, where)


def _rule(key: str, inherited: str | None) -> str | None:
    if key in FRACTIONS:
        return "fraction"
    if key in COUNTS:
        return "count"
    if key.endswith("_seconds") or key == "seconds":
        return "duration"
    return inherited


def _check(path: str, value: Any, inherited: str | None, where: str) -> None:
    rule = _rule(path.rsplit(".", 1)[-1].split("[", 1)[0], inherited)
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check(f"{path}.{k}", v, rule, where)
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check(f"{path}[{i}]", v, rule, where)
        if rule == "fraction" and path.endswith("cmc"):
            _check_monotone(path, value, where)
        return
    if value is None or isinstance(value, (str, bool)):
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ReidbenchError(f"{where}: {path} = {value!r} is not a number, a string or null") from None
    if not math.isfinite(number):
        raise ReidbenchError(f"{where}: {path} is {number}; no metric may be NaN or infinite "
                             "(non-finite features or scores upstream)")
    if rule == "fraction" and not 0.0 <= number <= 1.0:
        raise ReidbenchError(f"{where}: {path} = {number!r} is impossible: it is a fraction, "
                             "expected in [0, 1]")
    if rule == "count" and (number < 0 or number != int(number)):
        raise ReidbenchError(f"{where}: {path} = {value!r} is impossible: expected a "
                             "non-negative integer count")
    if rule == "duration" and number < 0:
        raise ReidbenchError(f"{where}: {path} = {number!r} is impossible: a duration is >= 0")


def _check_monotone(path: str, values: list[Any] | tuple[Any, ...], where: str) -> None:
    numbers = [float(v) for v in values if v is not None]
    for i in range(1, len(numbers)):
        if numbers[i] < numbers[i - 1]:
            raise ReidbenchError(f"{where}: {path} decreases at rank {i + 1} ({numbers[i - 1]!r} "
                                 f"then {numbers[i]!r}); a CMC curve never decreases")
