"""Training loop, checkpoints, resume, runs, robustness sweeps of trained models, the bench,
and the progress bars."""
