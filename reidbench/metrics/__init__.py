"""Pure metric functions on numpy arrays."""

from reidbench.metrics.rank import RankResult, evaluate_ranking

__all__ = ["RankResult", "evaluate_ranking"]
