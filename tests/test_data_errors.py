"""Data problems are one line and exit 2 through the CLI, never a traceback (issue 12, item 8):
text files that are not UTF-8, permission errors while listing or reading a tree, images PIL
refuses (decompression bombs) or cannot decode."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from conftest import make_market_tree
from PIL import Image
from test_ijb import ijb_tree
from test_lfw import _tiny_lfw
from test_msmt17 import msmt_tree

from reidbench import cli
from reidbench.data.loader import load_rgb
from reidbench.errors import DatasetError

LATIN1 = "Jos\xe9_Mar\xeda".encode("latin-1")  # not UTF-8


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli.main(["-q", *args])
    err = capsys.readouterr().err
    return code, err


def one_line(code: int, err: str) -> str:
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("reidbench: error: "), err
    assert "Traceback" not in err
    return err


def test_lfw_pairs_txt_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tiny_lfw(tmp_path)
    (tmp_path / "pairs.txt").write_bytes(b"1\t1\nAlice_Smith\t1\t2\n" + LATIN1 + b"\t1\tBob_Jones\t1\n")
    err = one_line(*run(capsys, "data", "check", "lfw", "--data-root", str(tmp_path)))
    assert f"{tmp_path / 'pairs.txt'}:3: not UTF-8" in err and "0xe9" in err


def test_keypoint_csv_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_market_tree(tmp_path / "Market-1501-v15.09.15")
    bad = tmp_path / "k.csv"
    bad.write_bytes(b"path,a_x,a_y\nquery/0001_c1s1_001051_00.jpg,0.5,0.5\n" + LATIN1 + b".jpg,0.1,0.1\n")
    err = one_line(*run(capsys, "data", "check", "market1501", "--data-root", str(tmp_path),
                        "--keypoints", str(bad)))
    assert f"{bad}:3: not UTF-8" in err and "keypoint sidecar" in err


@pytest.mark.parametrize("kind", ["face_tid_mid", "template_pair_label", "name_5pts_score"])
def test_ijb_meta_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    root = ijb_tree(tmp_path / "IJBB")
    meta = root / "meta" / f"ijbb_{kind}.txt"
    lines = meta.read_bytes().splitlines(keepends=True)
    meta.write_bytes(b"".join(lines[:2]) + b"\xff" + b"".join(lines[2:]))
    err = one_line(*run(capsys, "data", "check", "ijbb", "--data-root", str(tmp_path)))
    assert f"{meta}:3: not UTF-8" in err and "IJB meta file" in err


def test_msmt17_list_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    version = msmt_tree(tmp_path / "MSMT17_V1")
    listing = version / "list_query.txt"
    listing.write_bytes(listing.read_bytes() + LATIN1 + b" 3\n")
    err = one_line(*run(capsys, "data", "check", "msmt17", "--data-root", str(tmp_path)))
    assert f"{listing}:" in err and "not UTF-8" in err


def test_a_byte_order_mark_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _tiny_lfw(tmp_path)
    (tmp_path / "pairs.txt").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "pairs.txt").read_bytes())
    code, err = run(capsys, "data", "check", "lfw", "--data-root", str(tmp_path), "--images", "none")
    assert code == 0, err


def _deny(monkeypatch: pytest.MonkeyPatch, denied: Path, method: str) -> None:
    """Make ``Path.<method>`` on ``denied`` raise PermissionError, as chmod 000 would for a
    non-root user (tests usually run as root, whom chmod does not stop)."""
    original = getattr(Path, method)

    def guarded(self: Path, *args: object, **kwargs: object) -> object:
        if self == denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, guarded)


def test_unlistable_split_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make_market_tree(tmp_path / "Market-1501-v15.09.15")
    _deny(monkeypatch, tree / "query", "iterdir")
    err = one_line(*run(capsys, "data", "check", "market1501", "--data-root", str(tmp_path)))
    assert f"permission denied on {tree / 'query'}" in err and err.startswith("reidbench: error: market1501")


def test_unreadable_pairs_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_lfw(tmp_path)
    _deny(monkeypatch, tmp_path / "pairs.txt", "open")
    err = one_line(*run(capsys, "data", "check", "lfw", "--data-root", str(tmp_path)))
    assert f"permission denied on {tmp_path / 'pairs.txt'}" in err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root is not denied by chmod")
def test_chmod_000_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_market_tree(tmp_path / "Market-1501-v15.09.15")
    (tree / "bounding_box_test").chmod(0)
    try:
        err = one_line(*run(capsys, "data", "check", "market1501", "--data-root", str(tmp_path)))
    finally:
        (tree / "bounding_box_test").chmod(0o755)
    assert "permission denied" in err and "bounding_box_test" in err


def test_generator_out_of_space_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    root = str(tmp_path / "s")
    err = one_line(*run(capsys, "data", "synth", "synthetic-reid", "--root", root, "--ids", "2"))
    assert "no space left" in err and str(tmp_path / "s") in err


def test_decompression_bomb_names_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = make_market_tree(tmp_path / "Market-1501-v15.09.15")
    image = tree / "query" / "0001_c1s1_001051_00.jpg"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 128 > 2 x 1000: refused by PIL
    with pytest.raises(DatasetError, match="decompression bomb") as err:
        load_rgb(str(image))
    assert str(image) in str(err.value)
    err_line = one_line(*run(capsys, "data", "check", "market1501", "--data-root", str(tmp_path)))
    assert "unreadable image" in err_line and "DecompressionBombError" in err_line


def test_any_decode_failure_names_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path)

    def broken(self: Image.Image, *args: object, **kwargs: object) -> Image.Image:
        raise IndexError("tile extends past the image")  # as some malformed TIFF/BMP raise

    monkeypatch.setattr(Image.Image, "convert", broken)
    with pytest.raises(DatasetError, match=r"a\.png: IndexError: tile extends past the image"):
        load_rgb(str(path))
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DatasetError, match=r"cannot read image .*b\.png"):
        load_rgb(str(tmp_path / "b.png"))


def test_preview_of_a_bomb_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image loader every command shares (training, evaluation, preview) names the file."""
    make_market_tree(tmp_path / "Market-1501-v15.09.15")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    err = one_line(*run(capsys, "data", "preview", "market1501", "--data-root", str(tmp_path),
                        "--out", str(tmp_path / "grid.png"), "--num", "2"))
    assert "decompression bomb" in err and ".jpg" in err
