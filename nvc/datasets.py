"""Benchmark datasets: the standard learned-video-coding test sets, any folder of clips, or the sample.

``find_sequences(dataset, root)`` returns :class:`Sequence` objects:

- ``uvg``, ``hevc-b``, ``mcl-jcv``: the known sequence lists below, looked up under ``root`` (recursively) by
  name: a file whose name starts with the sequence name (case-insensitive, followed by a non-alphanumeric
  character or the extension) and ends in .yuv, .y4m or .mp4. When several match, the one at the dataset's
  size (1920x1080) wins, then .yuv over .y4m over .mp4, then the shortest name; 10/16-bit raw files
  (``10bit`` in the name) are skipped, as nvc reads 8-bit raw only.
- a folder (or a single file): every .yuv/.y4m/.mp4/.mkv/.avi/.mov/.webm clip in it (not recursive), and each subfolder that
  holds one numbered image sequence (``6.1.01.png`` ... ``6.1.16.png``), named after the subfolder; a folder of
  such images is itself one sequence. A raw .yuv needs its size in the name (``name_1920x1080_50.yuv``).
- ``sample``: nvc's built-in procedurally generated clip, written as ``sample.y4m`` into ``root``.

Raw .yuv frame rates come from the name (``120fps``, or the number after the size: ``_1920x1080_50``),
else the dataset's known rate, else 30.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .errors import InputError
from .io import CLIP_EXTS, fps_from_name, image_sequence_pattern, parse_fps, size_from_name

__all__ = ["Sequence", "DATASETS", "Dataset", "find_sequences", "scan_folder", "probe"]

VIDEO_EXTS = (".yuv", ".y4m", ".mp4")
FOLDER_EXTS = CLIP_EXTS


@dataclass(frozen=True)
class Sequence:
    """One test clip: a display name, its file, and its size and frame rate."""

    name: str
    path: Path
    width: int
    height: int
    fps: Fraction
    frames: int | None = None  # frames in the file, when known

    @property
    def is_raw(self) -> bool:
        return self.path.suffix.lower() == ".yuv"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "path": str(self.path), "width": self.width, "height": self.height,
                "fps": float(self.fps), "frames": self.frames}


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    url: str
    size: tuple[int, int]
    sequences: dict[str, int]  # name -> frame rate


DATASETS: dict[str, Dataset] = {
    "uvg": Dataset(
        "uvg", "UVG (Ultra Video Group) 1080p", "https://ultravideo.fi/dataset.html", (1920, 1080),
        {s: 120 for s in ("Beauty", "Bosphorus", "HoneyBee", "Jockey", "ReadySteadyGo", "ShakeNDry", "YachtRide")},
    ),
    "hevc-b": Dataset(
        "hevc-b", "HEVC (JCT-VC) common test sequences, Class B",
        "https://www.itu.int/en/ITU-T/studygroups/2017-2020/16/Pages/video/jctvc.aspx (JCTVC-L1100 test sequences)",
        (1920, 1080),
        {"BQTerrace": 60, "BasketballDrive": 50, "Cactus": 50, "Kimono1": 24, "ParkScene": 24},
    ),
    "mcl-jcv": Dataset(
        "mcl-jcv", "MCL-JCV", "http://mcl.usc.edu/mcl-jcv-dataset/", (1920, 1080),
        {f"videoSRC{i:02d}": 30 for i in range(1, 31)},
    ),
}


def _fps_in_name(name: str) -> Fraction | None:
    try:
        f = fps_from_name(name)
    except InputError:
        f = None
    if f is not None:
        return f
    m = re.search(r"(?<![0-9])\d{2,5}x\d{2,5}_(\d{1,3}(?:\.\d+)?)(?=[_\-]|\.[A-Za-z]|$)", name)
    if m:
        try:
            return parse_fps(m.group(1))
        except InputError:
            return None
    return None


def probe(path: Path, name: str | None = None, default_fps: Fraction | int | None = None) -> Sequence:
    """A :class:`Sequence` for one file: size and rate from the name (.yuv) or the header (others)."""
    from .io import frame_bytes
    from .io import open as open_video

    name = name or path.stem
    if path.suffix.lower() == ".yuv":
        size = size_from_name(path.name)
        if size is None:
            raise InputError(f"{path}: raw .yuv needs its size in the file name, e.g. {path.stem}_1920x1080_30.yuv")
        fps = _fps_in_name(path.name) or (Fraction(default_fps) if default_fps else Fraction(30))
        fb = frame_bytes(*size)
        total = path.stat().st_size
        if total < fb or total % fb:
            raise InputError(f"{path}: {total} bytes is not a whole number of {size[0]}x{size[1]} yuv420p frames")
        return Sequence(name, path, size[0], size[1], fps, total // fb)
    with open_video(path, "r") as r:
        info = r.info  # type: ignore[union-attr]
    n = info.frames
    if n is None and path.suffix.lower() == ".y4m" and info.pix_fmt.startswith("yuv420"):
        with path.open("rb") as f:  # count frames from the length, if every frame header is a bare "FRAME\n"
            head = len(f.readline())
        body, fb = path.stat().st_size - head, frame_bytes(info.width, info.height) + 6
        n = body // fb if body > 0 and body % fb == 0 else None
    return Sequence(name, path, info.width, info.height, info.fps, n)


def _match(files: list[Path], seq: str, size: tuple[int, int]) -> Path | None:
    key = seq.lower()
    cands = []
    for p in files:
        n = p.name.lower()
        if p.suffix.lower() not in VIDEO_EXTS or not n.startswith(key):
            continue
        rest = n[len(key):]
        if rest and rest[0].isalnum():
            continue  # videoSRC1 must not match videoSRC10, Cactus not CactusFoo
        if p.suffix.lower() == ".yuv" and re.search(r"(10|12|16)\s*bit", n):
            continue
        cands.append(p)
    if not cands:
        return None
    tag = f"{size[0]}x{size[1]}"
    return min(cands, key=lambda p: (tag not in p.name.lower(), VIDEO_EXTS.index(p.suffix.lower()),
                                     len(p.name), str(p)))


def _known(ds: Dataset, root: str | Path | None, only: list[str] | None) -> list[Sequence]:
    where = f"download it from {ds.url}"
    if root is None:
        raise InputError(f"--dataset {ds.name} needs --root DIR, the folder holding the {ds.title} files ({where})")
    r = Path(root).expanduser()
    if not r.is_dir():
        raise InputError(f"{ds.title}: --root {r} is not a folder ({where})")
    names = list(ds.sequences)
    if only:
        lower = {n.lower(): n for n in names}
        bad = [s for s in only if s.lower() not in lower]
        if bad:
            raise InputError(f"{ds.name} has no sequence {', '.join(bad)}; it has {', '.join(names)}")
        names = [lower[s.lower()] for s in only]
    files = sorted(p for p in r.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    found, missing = [], []
    for n in names:
        p = _match(files, n, ds.size)
        if p is None:
            missing.append(n)
        else:
            found.append((n, p))
    if missing:
        what = "no sequence" if len(missing) == len(names) else f"{len(missing)} of {len(names)} sequences missing"
        raise InputError(
            f"{ds.title}: {what} under {r} ({', '.join(missing)}; expected e.g. "
            f"{missing[0]}_{ds.size[0]}x{ds.size[1]}_{ds.sequences[missing[0]]}.yuv, .y4m or .mp4); {where}"
        )
    return [probe(p, n, ds.sequences[n]) for n, p in found]


def _image_sequence(folder: Path) -> tuple[str, Path] | None:
    pattern = image_sequence_pattern(folder)
    return (folder.name, folder / pattern) if pattern else None


def scan_folder(path: str | Path) -> list[Sequence]:
    """Every .yuv/.y4m/.mp4/.mkv/.avi/.mov/.webm clip in a folder (or the one file given) and every subfolder holding a numbered
    image sequence, sorted by name; a folder of numbered images is one sequence."""
    p = Path(path).expanduser()
    found: list[tuple[str | None, Path]] = []
    if p.is_file():
        found = [(None, p)]
    elif p.is_dir():
        entries = sorted(p.iterdir())
        found = [(None, f) for f in entries if f.is_file() and f.suffix.lower() in FOLDER_EXTS]
        found += [s for d in entries if d.is_dir() and (s := _image_sequence(d)) is not None]
        if not found and (s := _image_sequence(p)) is not None:
            found = [s]
        if not found:
            raise InputError(f"{p}: no video clips ({', '.join(FOLDER_EXTS)}) nor numbered images in this folder")
        found.sort(key=lambda s: s[1].name if s[0] is None else s[0])  # files by name, as before; folders too
    else:
        raise InputError(f"--dataset {path}: not a known dataset ({', '.join([*DATASETS, 'sample'])}) nor a folder")
    seqs = [probe(f, name) for name, f in found]
    seen: dict[str, int] = {}
    out = []
    for s in seqs:  # a.yuv and a.y4m in one folder: keep both, with distinct names
        k = seen.get(s.name, 0)
        seen[s.name] = k + 1
        out.append(s if k == 0 else Sequence(f"{s.name}-{k}", s.path, s.width, s.height, s.fps, s.frames))
    return out


def sample_sequence(root: str | Path) -> Sequence:
    """Writes (once) the built-in sample clip as ``root/sample.y4m`` and returns it."""
    from .sample import write_sample

    d = Path(root).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    p = d / "sample.y4m"
    if not p.is_file():
        write_sample(p)
    return probe(p, "sample")


def find_sequences(dataset: str, root: str | Path | None = None, sequences: list[str] | None = None) -> list[Sequence]:
    """The sequences of ``dataset``: a known name (``uvg``, ``hevc-b``, ``mcl-jcv``) looked up under
    ``root``, ``sample`` (written into ``root``), or a folder of clips. ``sequences`` selects a subset by name."""
    key = dataset.strip().lower()
    if key in DATASETS:
        return _known(DATASETS[key], root, sequences)
    if key == "sample":
        if root is None:
            import tempfile

            root = Path(tempfile.gettempdir()) / "nvc-sample"
        seqs = [sample_sequence(root)]
    else:
        seqs = scan_folder(dataset)
    if sequences:
        want = {s.lower() for s in sequences}
        picked = [s for s in seqs if s.name.lower() in want]
        if len(picked) != len(want):
            missing = want - {s.name.lower() for s in picked}
            have = ", ".join(s.name for s in seqs)
            raise InputError(f"{dataset}: no sequence {', '.join(sorted(missing))}; it has {have}")
        seqs = picked
    return seqs
