"""Finding the videos of a dataset: UCF-101, SkyTimelapse, or any folder of videos.

UCF-101 follows the official `VideoFolderDataset` (reference §6.1): `<root>/<Class>/*.avi` with
the `ucfTrainTestlist/` split lists inside; fold 1's train list is what the official code
trains on, and `all` (train + test) is the StyleGAN-V protocol. SkyTimelapse follows
`ImageFolderDataset` (§6.2): `{train,test}/<video>/<clip>/frame*.jpg` (the two-level MD-GAN
release the official code reads) or `{train,test}/<video>/frame*.jpg`. Anything else is a
folder searched recursively for video files and frame folders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pvdm.data.decode import VIDEO_SUFFIXES
from pvdm.data.frames import IMAGE_SUFFIXES, natural_key
from pvdm.errors import DataError

log = logging.getLogger(__name__)

UCF_LISTS = "ucfTrainTestlist"
SPLITS = ("train", "test", "all")


@dataclass
class Discovery:
    """What a layout found: candidate videos with labels, before any file is opened."""

    layout: str
    root: Path
    items: list[tuple[Path, int]] = field(default_factory=list)  # (video path, label or -1)
    classes: list[str] | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # a folder without train/test sub-folders: every split is the same videos
    unsplit: bool = False


def detect_layout(path: Path) -> str:
    """'ucf101', 'sky' or 'folder' for an existing path."""
    if path.is_dir():
        if (path / UCF_LISTS).is_dir() or (path / "UCF-101").is_dir() or path.name == "UCF-101":
            return "ucf101"
        if _looks_like_sky(path):
            return "sky"
    return "folder"


def discover(
    path: str | Path, layout: str, split: str, fold: int, *, links_out: bool = True
) -> Discovery:
    """Find the videos of `split` under `path` for `layout` ('auto' detects it).

    `links_out=False` keeps a folder search inside `path`: symbolic links to folders elsewhere
    are skipped (a folder of samples has no reason to reach out of itself).
    """
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise DataError(
            f"dataset path {path} does not exist; give a folder of videos, a UCF-101 or "
            "SkyTimelapse folder, or 'synthetic'"
        )
    if layout == "auto":
        layout = detect_layout(path)
    if layout == "ucf101":
        return _ucf101(path, split, fold)
    if layout == "sky":
        return _sky(path, split)
    if layout == "folder":
        return _folder(path, split, links_out)
    raise DataError(f"unknown data layout '{layout}'; use auto, ucf101, sky, folder or synthetic")


# --- UCF-101 ----------------------------------------------------------------------------


def _ucf101(path: Path, split: str, fold: int) -> Discovery:
    root = path if (path / UCF_LISTS).is_dir() or path.name == "UCF-101" else path / "UCF-101"
    lists = root / UCF_LISTS
    if not lists.is_dir():
        raise DataError(
            f"UCF-101 split lists not found: expected {lists}/ (unzip "
            "UCF101TrainTestSplits-RecognitionTask.zip there), or use --layout folder to read "
            "every video without splits"
        )
    if split not in SPLITS:
        raise DataError(f"UCF-101 split must be train, test or all, got '{split}'")
    if not 1 <= fold <= 3:
        raise DataError(f"UCF-101 fold must be 1, 2 or 3, got {fold}")
    classes = _ucf_classes(root, lists)
    lookup = {name.lower(): i for i, name in enumerate(classes)}
    names = ["train", "test"] if split == "all" else [split]
    found = Discovery("ucf101", root, classes=classes)
    seen: set[str] = set()
    folders: dict[Path, dict[str, str]] = {}
    for name in names:
        list_file = lists / f"{name}list{fold:02d}.txt"
        if not list_file.is_file():
            raise DataError(f"UCF-101 split list {list_file} is missing; fold {fold} needs it")
        for line in list_file.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.strip().split()
            if not parts:
                continue
            rel = parts[0].replace("\\", "/")
            if rel.lower() in seen:
                continue
            seen.add(rel.lower())
            class_name = rel.split("/")[0]
            video = _find_case_insensitive(root / rel, folders)
            if video is None:
                found.missing.append((str(root / rel), f"listed in {list_file.name} but not found"))
            elif class_name.lower() not in lookup:
                found.missing.append((str(video), f"class '{class_name}' is not in classInd.txt"))
            else:
                found.items.append((video, lookup[class_name.lower()]))
    return found


def _ucf_classes(root: Path, lists: Path) -> list[str]:
    class_ind = lists / "classInd.txt"
    if class_ind.is_file():
        numbered = []
        for line in class_ind.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit():
                numbered.append((int(parts[0]), parts[1]))
        if numbered:
            # Labels follow classInd's numbering (1-based there, 0-based here).
            return [name for _, name in sorted(numbered)]
    return sorted(
        (d.name for d in root.iterdir() if d.is_dir() and d.name != UCF_LISTS), key=natural_key
    )


def _find_case_insensitive(path: Path, folders: dict[Path, dict[str, str]]) -> Path | None:
    if path.is_file():
        return path
    # The official lists and folders disagree on case in places (HandStandPushups).
    parent = _find_case_insensitive_dir(path.parent)
    if parent is None:
        return None
    if parent not in folders:
        folders[parent] = {p.name.lower(): p.name for p in parent.iterdir()}
    name = folders[parent].get(path.name.lower())
    return parent / name if name else None


def _find_case_insensitive_dir(path: Path) -> Path | None:
    if path.is_dir():
        return path
    if not path.parent.is_dir():
        return None
    for candidate in path.parent.iterdir():
        if candidate.name.lower() == path.name.lower() and candidate.is_dir():
            return candidate
    return None


# --- SkyTimelapse -----------------------------------------------------------------------


def _looks_like_sky(path: Path) -> bool:
    for split in ("train", "test"):
        split_dir = path / split
        if not split_dir.is_dir():
            continue
        for video in _subdirs(split_dir):
            if _has_images(video):
                return True
            return any(_has_images(clip) for clip in _subdirs(video))
    return False


def _sky(path: Path, split: str) -> Discovery:
    names = ["train", "test"] if split == "all" else [split]
    found = Discovery("sky", path)
    for name in names:
        split_dir = path / name
        if not split_dir.is_dir():
            have = ", ".join(d.name for d in _subdirs(path)) or "none"
            raise DataError(
                f"SkyTimelapse split folder {split_dir} not found (sub-folders here: {have}); "
                "expected <root>/train and <root>/test"
            )
        for video in _subdirs(split_dir):
            if _has_images(video):
                found.items.append((video, -1))  # one level: <video>/frame*.jpg
            else:
                clips = [clip for clip in _subdirs(video) if _has_images(clip)]
                found.items.extend((clip, -1) for clip in clips)  # two levels
                if not clips:
                    found.missing.append((str(video), "no image frames in the folder"))
    return found


# --- any folder -------------------------------------------------------------------------


def _folder(path: Path, split: str, links_out: bool = True) -> Discovery:
    if path.is_file():
        return Discovery("folder", path.parent, items=[(path, -1)], unsplit=True)
    base = path
    split_dirs = [d.name for d in _subdirs(path) if d.name in ("train", "test", "val")]
    if split_dirs and split != "all":
        base = path / split
        if not base.is_dir():
            raise DataError(
                f"no '{split}' folder in {path} (it has {', '.join(split_dirs)}); "
                "pick one of those with --split"
            )
    videos = sorted(
        _walk(base, links_out), key=lambda v: natural_key(v.relative_to(base).as_posix())
    )
    rel = [v.relative_to(base).parts for v in videos]
    if split_dirs and split == "all":
        rel = [r[1:] if r[0] in split_dirs else r for r in rel]
    labelled = bool(videos) and all(len(r) >= 2 for r in rel)
    found = Discovery("folder", path, unsplit=not split_dirs)
    if labelled:
        found.classes = sorted({r[0] for r in rel}, key=natural_key)
        index = {name: i for i, name in enumerate(found.classes)}
        found.items = [(v, index[r[0]]) for v, r in zip(videos, rel)]
    else:
        found.items = [(v, -1) for v in videos]
    return found


def _walk(base: Path, links_out: bool = True) -> Iterator[Path]:
    """Video files and frame folders under `base`, in natural order.

    Each real file and folder counts once (two links to one video are one video). A link to
    a folder that holds `base` (a loop, or `/`: the whole file system) is skipped with a
    warning, and so is any link out of `base` unless `links_out`.
    """
    root = os.path.realpath(base)
    seen: set[str] = set()
    stack = [base]
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: natural_key(e.name))
        except OSError:
            continue
        subdirs = []
        has_images = False
        for entry in entries:
            if entry.name.startswith("."):
                continue
            suffix = os.path.splitext(entry.name)[1].lower()
            if _is_dir(entry):
                if not entry.is_symlink() or _follow(entry, root, links_out):
                    subdirs.append(Path(entry.path))
            elif suffix in VIDEO_SUFFIXES:
                target = os.path.realpath(entry.path)
                if target not in seen:
                    seen.add(target)
                    yield Path(entry.path)
            elif suffix in IMAGE_SUFFIXES:
                has_images = True
        if has_images:
            yield folder  # a frame folder (the base itself when given one directly)
        stack.extend(reversed(subdirs))


def _follow(link: os.DirEntry, root: str, links_out: bool) -> bool:
    """Whether a folder search under `root` enters the symbolic link `link` (to a folder)."""
    target = os.path.realpath(link.path)
    inside = os.path.commonpath([root, target]) == root
    if not inside and os.path.commonpath([root, target]) == target:
        log.warning(
            "skipping %s: it links to %s, a folder that holds the dataset itself", link.path, target
        )
        return False
    if not inside and not links_out:
        log.warning("skipping %s: it links to %s, outside %s", link.path, target, root)
        return False
    return True


def _is_dir(entry: os.DirEntry) -> bool:
    """entry.is_dir(), False (with a warning) for a symbolic link that loops or cannot be read."""
    try:
        return entry.is_dir()
    except OSError as e:
        log.warning("skipping %s: %s", entry.path, e.strerror or e)
        return False


def _subdirs(path: Path) -> list[Path]:
    try:
        entries = [Path(e.path) for e in os.scandir(path) if e.name[0] != "." and _is_dir(e)]
    except OSError:
        return []
    return sorted(entries, key=lambda p: natural_key(p.name))


def _has_images(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(
                os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()
                for e in entries
            )
    except OSError:
        return False
