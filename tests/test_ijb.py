"""IJB-B / IJB-C: insightface's layout, every malformed meta file, template scoring, the
evaluation path end to end, and the full-size meta files without reading images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_jpeg
from sklearn.metrics import roc_auc_score

from reidbench import cli
from reidbench.config import DataConfig, ModelConfig
from reidbench.data.alignment import ARCFACE_TEMPLATE
from reidbench.data.loader import ImageDataset
from reidbench.data.transforms import Transform
from reidbench.datasets.base import FACE_KEYPOINTS, TemplateSet
from reidbench.datasets.catalog import build_dataset
from reidbench.datasets.ijb import IJBB, IJBC, read_ijb
from reidbench.errors import DatasetError
from reidbench.evaluation.reid import extract_features
from reidbench.evaluation.templates import evaluate_templates
from reidbench.models import build_model

# template -> (subject, [media of each image]); templates 10 and 11 share subject 0
TEMPLATES = {
    10: (0, [501, 501, 502]),
    11: (0, [503]),
    12: (1, [504, 504]),
    13: (1, [505]),
    14: (2, [506, 507]),
}
PAIRS = [(10, 11, 1), (12, 13, 1), (10, 12, 0), (11, 14, 0), (13, 14, 0), (10, 14, 0)]


def ijb_tree(root: Path, prefix: str = "ijbb", shuffle_landmarks: bool = False) -> Path:
    """A tiny tree in insightface's layout; returns the folder holding loose_crop/ and meta/."""
    rng = np.random.default_rng(0)
    tid_lines, lmk_lines = [], []
    k = 0
    for tid, (_, media) in TEMPLATES.items():
        for mid in media:
            k += 1
            write_jpeg(root / "loose_crop" / f"{k}.jpg", seed=k, size=(150, 160))
            lm = ARCFACE_TEMPLATE * 1.2 + rng.uniform(5, 15, 2)
            coords = " ".join(f"{v:.3f}" for v in lm.reshape(-1))
            tid_lines.append(f"{k}.jpg {tid} {mid}")
            lmk_lines.append(f"{k}.jpg {coords} {0.5 + 0.05 * k:.4f}")
    if shuffle_landmarks:
        lmk_lines = lmk_lines[::-1]
    meta = root / "meta"
    meta.mkdir(parents=True)
    (meta / f"{prefix}_face_tid_mid.txt").write_text("\n".join(tid_lines) + "\n")
    (meta / f"{prefix}_name_5pts_score.txt").write_text("\n".join(lmk_lines) + "\n")
    (meta / f"{prefix}_template_pair_label.txt").write_text("".join(f"{a} {b} {y}\n" for a, b, y in PAIRS))
    return root


def test_reads_the_layout(tmp_path: Path) -> None:
    ijb_tree(tmp_path / "IJBB")
    ts = read_ijb(tmp_path, IJBB)
    assert isinstance(ts, TemplateSet) and ts.root == tmp_path / "IJBB"
    assert len(ts.images) == 9 and ts.num_templates == 5
    assert ts.template_ids.tolist() == [10, 10, 10, 11, 12, 12, 13, 14, 14]
    assert ts.media_ids.tolist() == [501, 501, 502, 503, 504, 504, 505, 506, 507]
    np.testing.assert_allclose(ts.detector_scores, 0.5 + 0.05 * np.arange(1, 10), atol=1e-6)
    assert ts.template_pairs.tolist() == [[a, b] for a, b, _ in PAIRS]
    assert ts.labels.tolist() == [y for *_, y in PAIRS] and ts.labels.dtype == np.int8
    assert ts.template_pairs.dtype == np.int32 and ts.keypoint_schema is FACE_KEYPOINTS
    first = ts.images[0]
    assert first.path == str(tmp_path / "IJBB" / "loose_crop" / "1.jpg") and first.pid == 10
    assert first.align is not None and first.align.size == 112
    assert first.align.landmarks_px.shape == (5, 2)


def test_landmarks_are_joined_by_name_not_line(tmp_path: Path) -> None:
    a = read_ijb(ijb_tree(tmp_path / "a"), IJBB)
    b = read_ijb(ijb_tree(tmp_path / "b", shuffle_landmarks=True), IJBB)
    for ra, rb in zip(a.images, b.images):
        np.testing.assert_array_equal(ra.align.landmarks_px, rb.align.landmarks_px)
    np.testing.assert_array_equal(a.detector_scores, b.detector_scores)


def test_ijbc_names_and_registry(tmp_path: Path) -> None:
    ijb_tree(tmp_path / "IJBC", "ijbc")
    ts = build_dataset(DataConfig(name="ijbc", root=str(tmp_path)))
    assert ts.name == "ijbc" and len(ts.labels) == len(PAIRS)
    with pytest.raises(DatasetError, match="ijbb_face_tid_mid.txt does not exist"):
        read_ijb(tmp_path / "IJBC", IJBB)


def _edit(path: Path, lineno: int, text: str | None) -> None:
    lines = path.read_text().splitlines()
    if text is None:
        del lines[lineno - 1]
    else:
        lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "lineno", "text", "match"),
    [
        ("face_tid_mid", 4, "4.jpg 11", r"ijbb_face_tid_mid\.txt:4: expected 3 fields"),
        ("face_tid_mid", 2, "2.jpg 10 x", r"ijbb_face_tid_mid\.txt:2: non-numeric"),
        ("template_pair_label", 3, "10 12", r"ijbb_template_pair_label\.txt:3: expected 3 fields"),
        ("template_pair_label", 1, "10 11 x", r"ijbb_template_pair_label\.txt:1: non-numeric"),
        ("template_pair_label", 2, "12 13 2", r"pair 2 has label 2"),
        ("template_pair_label", 5, "13 99 0", r"pair 5 \(13 99\) names a template with no image"),
        ("name_5pts_score", 3, "3.jpg 1 2 3 4 5 6 7 8 9 10", r"name_5pts_score\.txt:3: expected 12"),
        ("name_5pts_score", 2, "2.jpg 1 2 3 4 5 6 7 8 9 10 nan", r"non-finite landmark .* 2\.jpg"),
        ("name_5pts_score", 5, None, r"image 5\.jpg has no landmarks"),
        ("name_5pts_score", 5, "1.jpg 1 2 3 4 5 6 7 8 9 10 0.9", r"1\.jpg is listed twice"),
    ],
)
def test_malformed_meta_lines(tmp_path: Path, file: str, lineno: int, text: str | None, match: str) -> None:
    root = ijb_tree(tmp_path / "IJBB")
    _edit(root / "meta" / f"ijbb_{file}.txt", lineno, text)
    with pytest.raises(DatasetError, match=match):
        read_ijb(tmp_path, IJBB)


def test_missing_image_and_folders(tmp_path: Path) -> None:
    root = ijb_tree(tmp_path / "IJBB")
    (root / "loose_crop" / "7.jpg").unlink()
    with pytest.raises(DatasetError, match=r"loose_crop/7\.jpg does not exist"):
        read_ijb(tmp_path, IJBB)
    for p in (root / "loose_crop").iterdir():
        p.unlink()
    (root / "loose_crop").rmdir()
    with pytest.raises(DatasetError) as err:
        read_ijb(tmp_path, IJBB)
    assert "loose_crop is missing" in str(err.value) and "ijbb_name_5pts_score.txt" in str(err.value)
    with pytest.raises(DatasetError, match=r"does not exist.*never downloads.*nist\.gov"):
        read_ijb(tmp_path / "nope", IJBB)
    with pytest.raises(DatasetError, match=r"no loose_crop/ and meta/"):
        read_ijb(tmp_path / "IJBB" / "meta", IJBB)


def reference_metrics(ts: TemplateSet, feats: np.ndarray) -> tuple[np.ndarray, float]:
    """insightface's procedure written out with loops: detector-weighted features, mean per
    media, sum per template, normalise, cosine per pair; AUC by scikit-learn."""
    weighted = feats * ts.detector_scores[:, None]
    tfeat = {}
    for t in np.unique(ts.template_ids):
        total = np.zeros(feats.shape[1])
        for m in np.unique(ts.media_ids[ts.template_ids == t]):
            total += weighted[(ts.template_ids == t) & (ts.media_ids == m)].mean(0)
        tfeat[t] = total / np.linalg.norm(total)
    scores = np.array([tfeat[a] @ tfeat[b] for a, b in ts.template_pairs])
    return scores, float(roc_auc_score(ts.labels, scores))


def test_template_scoring_matches_insightface_procedure(tmp_path: Path) -> None:
    ts = read_ijb(ijb_tree(tmp_path), IJBB)
    feats = np.random.default_rng(1).standard_normal((len(ts.images), 16))
    got = evaluate_templates(ts, feats)
    _, auc = reference_metrics(ts, feats)
    assert got["auc"] == pytest.approx(auc, abs=1e-9)
    assert got["num_pairs"] == 6 and got["num_genuine"] == 2 and got["num_templates"] == 5
    assert got["tar_at_far"]["0.1"] is None  # 4 impostor pairs cannot measure FAR 0.1
    assert set(got) >= {"auc", "eer", "tar_at_far"}


def test_subject_features_verify_perfectly(tmp_path: Path) -> None:
    ts = read_ijb(ijb_tree(tmp_path), IJBB)
    subject = np.array([TEMPLATES[int(t)][0] for t in ts.template_ids])
    feats = np.eye(3)[subject] + 0.01 * np.random.default_rng(0).standard_normal((len(subject), 3))
    got = evaluate_templates(ts, feats, normalize=True, detector_weight=False)
    assert got["auc"] == 1.0 and got["eer"] == 0.0
    with pytest.raises(ValueError, match=r"\(9, D\)"):
        evaluate_templates(ts, feats[:3])


def test_evaluation_path_end_to_end(tmp_path: Path) -> None:
    """Tree -> registry -> image features of a ViT with keypoints -> template metrics."""
    ijb_tree(tmp_path / "IJBB")
    ts = build_dataset(DataConfig(name="ijbb", root=str(tmp_path)))
    torch.manual_seed(0)
    # depth 2: in one block the CLS query row gets a single prefix bias, so only through the
    # patch tokens of an earlier block do the landmarks reach the embedding
    model = build_model(ModelConfig(name="kprpe", depth=2), (112, 112), 5)
    tf = Transform(112, 112, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with torch.no_grad():  # non-zero KP-RPE tables, so the landmarks matter
        for p in model.backbone.kprpe.parameters():
            p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    dataset = ImageDataset(ts.images, tf, 5)
    feats = extract_features(model, dataset, 4, torch.device("cpu"))
    assert feats.feats.shape == (len(ts.images), model.dim)
    # each row is the model's embedding of that aligned crop with its own landmarks, in order
    model.eval()
    with torch.no_grad():
        for i in (0, 4, 8):
            item = dataset[i]
            one = model(item["image"][None], item["keypoints"][None]).numpy()[0]
            np.testing.assert_allclose(feats.feats[i], one, rtol=1e-5, atol=1e-5)
            assert not np.allclose(one, model(item["image"][None]).numpy()[0], atol=1e-4)  # landmarks used
    metrics = evaluate_templates(ts, feats.feats)
    scores, auc = reference_metrics(ts, feats.feats)
    assert metrics["auc"] == pytest.approx(auc, abs=1e-9) and metrics["num_pairs"] == len(PAIRS)
    assert metrics["num_genuine"] == 2 and metrics["num_templates"] == 5


def test_run_refuses_a_test_only_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ijb_tree(tmp_path / "IJBB")
    code = cli.main(
        [
            "-q",
            "run",
            "--dataset",
            "ijbb",
            "--data-root",
            str(tmp_path),
            "--epochs",
            "1",
            "--output",
            str(tmp_path / "runs"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "no training identities" in err and len(err.splitlines()) == 1


def test_full_size_meta_files_read_without_images_in_memory(tmp_path: Path) -> None:
    """20,000 crops (empty files: no image is opened) and 2 million pairs."""
    root = tmp_path / "IJBC"
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    n, p = 20_000, 2_000_000
    names = [f"{i}.jpg" for i in range(1, n + 1)]
    for name in names:
        (root / "loose_crop" / name).touch()
    rng = np.random.default_rng(0)
    tids = np.sort(rng.integers(0, 4000, n))
    (root / "meta" / "ijbc_face_tid_mid.txt").write_text(
        "".join(f"{a} {t} {t * 3 + i % 2}\n" for i, (a, t) in enumerate(zip(names, tids.tolist())))
    )
    lm = " ".join(["50.0"] * 10)
    (root / "meta" / "ijbc_name_5pts_score.txt").write_text("".join(f"{a} {lm} 0.9\n" for a in names))
    present = np.unique(tids)
    pairs = np.stack([rng.choice(present, p), rng.choice(present, p), rng.integers(0, 2, p)], 1)
    np.savetxt(root / "meta" / "ijbc_template_pair_label.txt", pairs, fmt="%d")
    ts = read_ijb(tmp_path, IJBC)
    assert len(ts.images) == n and len(ts.labels) == p and ts.num_templates == len(present)
    assert ts.template_pairs.nbytes + ts.labels.nbytes == p * 9  # int32 pairs, int8 labels
    feats = rng.standard_normal((n, 8)).astype(np.float32)
    metrics = evaluate_templates(ts, feats)
    assert metrics["num_pairs"] == p and metrics["num_genuine"] == int(pairs[:, 2].sum())
    assert json.dumps(metrics)  # plain types
    # the AUC of insightface's procedure (vectorised here): detector-weighted image features, mean
    # per media, sum per template, normalised; cosine per pair
    weighted = feats.astype(np.float64) * 0.9
    _, media = np.unique(np.stack([tids, np.arange(n) % 2 + tids * 3], 1), axis=0, return_inverse=True)
    media_sum = np.zeros((media.max() + 1, 8))
    np.add.at(media_sum, media, weighted)
    media_mean = media_sum / np.bincount(media)[:, None]
    media_template = np.zeros(media.max() + 1, dtype=np.int64)
    media_template[media] = tids
    tfeat = np.zeros((4000, 8))
    np.add.at(tfeat, media_template, media_mean)
    tfeat[present] /= np.linalg.norm(tfeat[present], axis=1, keepdims=True)
    scores = np.einsum("pd,pd->p", tfeat[pairs[:, 0]], tfeat[pairs[:, 1]])
    assert metrics["auc"] == pytest.approx(roc_auc_score(pairs[:, 2], scores), abs=1e-9)
