"""The one writer both synthetic generators use: it never deletes or overwrites a file it did
not write.

Ownership. A complete set ends with ``manifest.json``, written last and atomically, naming its
generator and listing every file the generator wrote with its SHA-256 (``"files": {relative
path: sha256}``). A file belongs to the generator when a manifest of that generator lists it
and its content still has the recorded hash; anything else in the folder is the user's: a file
the user added (a ``notes.txt`` inside ``bounding_box_train/``) or a generated file the user
has since changed.

Writing a set into ``root`` (``begin`` -> ``write`` ... -> ``finish``):

1. Refuse with one DatasetError, before changing anything, when
   - ``root/manifest.json`` exists and was not written by this generator (another tool's
     manifest beside a real dataset, an unreadable or non-JSON file);
   - there is no manifest of this generator (a first generation) and one of the entries the
     set writes at the top of ``root`` (its split folders, sidecar, ``pairs.txt``) already
     exists as a file or a non-empty folder: that may be real data;
   - a path the new set writes is occupied by a file that is not the generator's.
2. Otherwise write the incomplete marker ``.<generator>-incomplete`` (JSON: every file the
   previous set owns, with its hash, and every path the new set will write), delete the
   previous set's files that are still as written (and the folders that become empty), write
   the new files, then the manifest, then drop the marker.

User files are kept untouched (one warning counts them); they are never listed in a manifest.
An interrupted run leaves the marker, and the next run deletes exactly what it lists (paths
that were free when the run began, and old files only if their hash still matches). Sets
written before manifests listed their files carry a manifest of the generator without
``files``: the generator re-derives that list from the recorded seed and sizes
(``legacy_files``), and the set is treated as its own only if every one of those files exists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from reidbench.errors import DatasetError

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_TMP = MANIFEST_FILE + ".tmp"  # the manifest before its atomic rename
EXAMPLES = 3  # paths named in a refusal or warning

LegacyFiles = Callable[[dict[str, Any]], list[str]]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _some(paths: Iterable[str]) -> str:
    items = sorted(paths)
    more = f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else ""
    return ", ".join(items[:EXAMPLES]) + more


class SynthWriter:
    """Writes one generator's files under ``root`` without touching anyone else's (module
    docstring). ``legacy_files`` re-derives the file list of a manifest that has none."""

    def __init__(self, root: Path, generator: str, legacy_files: LegacyFiles | None = None) -> None:
        self.root = Path(root)
        self.generator = generator
        self.legacy_files = legacy_files
        self.marker = self.root / f".{generator}-incomplete"
        self._planned: set[str] = set()
        self._hashes: dict[str, str] = {}

    # ---------------------------------------------------------------- what is ours

    def _refuse(self, why: str) -> DatasetError:
        return DatasetError(f"{self.generator}: refusing to overwrite anything in {self.root}: {why}")

    def _read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_bytes().decode("utf-8"))
        except (OSError, ValueError):
            return None

    def _manifest_files(self) -> tuple[bool, dict[str, str | None]]:
        """(a manifest of ours exists, {path: sha256, or None when only its name is known})."""
        path = self.root / MANIFEST_FILE
        if not path.exists():
            return False, {}
        manifest = self._read_json(path)
        if not isinstance(manifest, dict) or manifest.get("generator") != self.generator:
            who = manifest.get("generator") if isinstance(manifest, dict) else None
            by = f"by {who!r}" if who else "by another program (no synthetic generator named)"
            raise self._refuse(
                f"{path} was written {by}, not by {self.generator}: the folder may hold real "
                "data. Choose an empty folder"
            )
        files = manifest.get("files")
        if isinstance(files, dict):
            return True, {str(k): str(v) for k, v in files.items()}
        try:
            derived = self.legacy_files(manifest) if self.legacy_files is not None else None
        except (KeyError, TypeError, ValueError):  # no usable seed / sizes recorded
            derived = None
        absent = [rel for rel in derived or [] if not (self.root / rel).is_file()]
        if derived is None or absent:
            detail = f" ({len(absent)} of its files are missing, e.g. {_some(absent)})" if absent else ""
            raise self._refuse(
                f"{path} lists no files (an older {self.generator}) and its set cannot be "
                f"recognised{detail}. Delete the set's folders yourself (after moving out anything "
                "of yours) and generate again"
            )
        return True, dict.fromkeys(derived)

    def _marker_files(self) -> tuple[bool, dict[str, str | None]]:
        """(a marker of ours exists, {path: sha256 or None}) of an interrupted generation."""
        if not self.marker.exists():
            return False, {}
        content = self._read_json(self.marker)
        if not isinstance(content, dict) or content.get("generator") != self.generator:
            raise self._refuse(
                f"{self.marker} marks an interrupted generation by an older reidbench whose files "
                "cannot be told from yours. Delete that set's folders and the marker yourself "
                "(after moving out anything of yours) and generate again"
            )
        files = content.get("files") or {}
        return True, {str(k): (str(v) if v else None) for k, v in files.items()}

    # ---------------------------------------------------------------- writing

    def begin(self, planned: Iterable[str]) -> None:
        """Check ``root`` (refusing as the module docstring says), then clear the previous set.

        ``planned`` are the paths (relative, forward slashes) the new set writes, besides the
        manifest."""
        if self.root.exists() and not self.root.is_dir():
            raise self._refuse("it is a file, not a folder")
        self._planned = set(planned) | {MANIFEST_FILE}
        had_manifest, listed = self._manifest_files()
        had_marker, marked = self._marker_files()
        tops = sorted({rel.split("/", 1)[0] for rel in self._planned} - {MANIFEST_FILE})
        ours = self._confined({**marked, **listed}, {*tops, MANIFEST_TMP})
        linked = [top for top in tops if (self.root / top).is_symlink()]
        if linked:
            raise self._refuse(
                f"{', '.join(linked)} is a symbolic link; the generator writes only into folders "
                "of its own. Replace the link by an empty folder"
            )
        removable, changed = [], []
        for rel, digest in sorted(ours.items()):
            path = self.root / rel
            if not path.is_file():
                continue
            if digest is None or sha256(path) == digest:
                removable.append(rel)
            else:
                changed.append(rel)
        if not had_manifest and not had_marker:
            occupied = [
                top for top in tops
                if (self.root / top).is_file()
                or (self.root / top).is_dir() and any((self.root / top).iterdir())
            ]
            if occupied:
                raise self._refuse(
                    f"it already holds {', '.join(occupied)} and no {MANIFEST_FILE} of "
                    f"{self.generator}: that may be real data. Choose an empty folder or delete them"
                )
        keep = set(removable) | ({MANIFEST_FILE} if had_manifest else set())
        clash = [rel for rel in self._planned if self._occupied(rel, keep)]
        if clash:
            edited = [rel for rel in clash if rel in changed]
            note = f" ({len(edited)} of them changed after {self.generator} wrote them)" if edited else ""
            raise self._refuse(
                f"{len(clash)} file(s) not written by {self.generator} are where the new set goes"
                f"{note}: {_some(clash)}. Move them away first"
            )
        self._write_marker(
            {**dict.fromkeys([*self._planned, MANIFEST_TMP]), **{rel: ours[rel] for rel in removable}}
        )
        if had_manifest:
            (self.root / MANIFEST_FILE).unlink()
        for rel in removable:
            if rel != MANIFEST_FILE:
                (self.root / rel).unlink()
        self._remove_empty_folders(removable)
        kept = [
            p.relative_to(self.root).as_posix()
            for top in tops if (self.root / top).is_dir()
            for p in (self.root / top).rglob("*") if p.is_file()
        ]
        if kept:
            logger.warning(
                "%s: kept %d file(s) in %s that it did not write: %s",
                self.generator, len(kept), self.root, _some(kept),
            )

    def _confined(self, files: dict[str, str | None], tops: set[str]) -> dict[str, str | None]:
        """The entries of a manifest or marker that may be the generator's: under one of its
        top-level entries ``tops``. A path leaving the folder (absolute, ``..``) means the file
        list was not written by the generator: refuse rather than delete outside ``root``."""
        out = {}
        for rel, digest in files.items():
            parts = rel.split("/")
            if rel.startswith("/") or "\\" in rel or ".." in parts or "" in parts or ":" in parts[0]:
                raise self._refuse(
                    f"its {MANIFEST_FILE} or {self.marker.name} lists {rel!r}, a path outside the "
                    f"folder: not a list {self.generator} wrote. Check the folder by hand"
                )
            if parts[0] in tops:
                out[rel] = digest
        return out

    def _occupied(self, rel: str, ours: set[str]) -> bool:
        """Whether writing ``rel`` would overwrite something not in ``ours`` (the file itself,
        or a file where one of its folders goes)."""
        path = self.root / rel
        if path.exists() or path.is_symlink():
            return rel not in ours
        parent = path.parent
        while parent != self.root:
            if parent.exists() and not parent.is_dir():
                return parent.relative_to(self.root).as_posix() not in ours
            parent = parent.parent
        return False

    def _write_marker(self, files: dict[str, str | None]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.marker.with_name(self.marker.name + ".tmp")
        tmp.write_text(json.dumps({"generator": self.generator, "files": dict(sorted(files.items()))}))
        os.replace(tmp, self.marker)

    def _remove_empty_folders(self, removed: list[str]) -> None:
        """Remove the folders of ``removed`` files that are now empty, deepest first."""
        folders: set[Path] = set()
        for rel in removed:
            parent = (self.root / rel).parent
            while parent != self.root and self.root in parent.parents:
                folders.add(parent)
                parent = parent.parent
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    def write(self, rel: str, data: bytes) -> None:
        """Write one planned file (``rel`` relative to the root)."""
        if rel not in self._planned or rel == MANIFEST_FILE:
            raise ValueError(f"{self.generator}: {rel} was not announced to begin()")
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._hashes[rel] = hashlib.sha256(data).hexdigest()

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Write ``manifest`` plus the ``files`` written (atomically, last), drop the marker and
        return the manifest as written."""
        unwritten = self._planned - set(self._hashes) - {MANIFEST_FILE}
        if unwritten:
            raise ValueError(f"{self.generator}: planned but not written: {_some(unwritten)}")
        manifest = {**manifest, "files": dict(sorted(self._hashes.items()))}
        tmp = self.root / MANIFEST_TMP
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.root / MANIFEST_FILE)
        self.marker.unlink()
        return manifest
