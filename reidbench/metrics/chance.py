"""The metrics a model that ranks at random gets in expectation: the floor below which a
"robustness ratio" (perturbed / clean metric) stops meaning anything.

Re-ID (``chance_map``): under the protocol of ``metrics.rank`` (same identity and camera removed,
junk pid ignored, queries without a positive skipped), a query with N valid gallery items of
which R are positives has, over uniformly random rankings,

    E[AP] = (H_N + (R - 1) / (N - 1) * (N - H_N)) / N,     H_N = 1 + 1/2 + ... + 1/N

(the k-th ranked item is a positive with probability R/N, and then the other positives above it
number (k - 1)(R - 1)/(N - 1) in expectation; N = 1 gives AP 1). The chance mAP is its mean over
the valid queries, exactly what ``evaluate_ranking`` would average over random scores.
1:1 verification: 0.5 accuracy on balanced pairs (``CHANCE_ACCURACY``).
"""

from __future__ import annotations

import numpy as np

CHANCE_ACCURACY = 0.5  # balanced positive / negative pairs, a random threshold side


def expected_ap(valid: int, positives: int) -> float:
    """E[AP] of a uniformly random ranking of ``valid`` items, ``positives`` of them relevant."""
    if not 1 <= positives <= valid:
        raise ValueError(f"need 1 <= positives <= valid, got {positives} of {valid}")
    if valid == 1:
        return 1.0
    harmonic = float(np.sum(1.0 / np.arange(1, valid + 1)))
    return (harmonic + (positives - 1) / (valid - 1) * (valid - harmonic)) / valid


def chance_map(
    query_pids: np.ndarray, gallery_pids: np.ndarray,
    query_camids: np.ndarray | None, gallery_camids: np.ndarray | None, *, junk_pid: int | None = -1,
) -> float:
    """Expected mAP of random rankings under the protocol of ``metrics.rank.evaluate_ranking``
    (same arguments); nan when no query has a valid positive."""
    qp, gp = np.asarray(query_pids), np.asarray(gallery_pids)
    if (query_camids is None) != (gallery_camids is None):
        raise ValueError("give both camera arrays or neither")
    qc = None if query_camids is None else np.asarray(query_camids)
    gc = None if gallery_camids is None else np.asarray(gallery_camids)
    keep = np.ones(len(gp), dtype=bool) if junk_pid is None else gp != junk_pid
    aps = []
    for i, pid in enumerate(qp):
        same_id = gp == pid
        valid = keep if qc is None or gc is None else keep & ~(same_id & (gc == qc[i]))
        positives = int(np.sum(valid & same_id))
        if positives:
            aps.append(expected_ap(int(valid.sum()), positives))
    return float(np.mean(aps)) if aps else float("nan")
