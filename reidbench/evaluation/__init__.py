"""Evaluation: the tasks (``tasks``: re-ID ranking, pair verification, template verification)
that extract features and score them, robustness sweeps, and `reidbench evaluate` files."""
