"""Builds ``.devkit/``: what a GPU training burst on the lent device machine needs beyond the repo.

That machine has PyTorch (Python 3.12) but not compressai, PyAV or construct, cannot download, and receives
only the repo plus carried folders, 64 MiB in all (``/work/.library/device/README.md``). The kit holds:

- ``wheels/``: PyAV's abi3 wheel, construct's and pytorch-msssim's wheels (compressai imports it; the image
  lacks it), and compressai's source archive (the index has no cp312 wheel; its C++ extension builds there
  with the image's compiler and pybind11), at the versions installed here, fetched with ``pip download``;
- ``data/video/``: the real training clips (``<data>/video``). A video longer than the frames training reads
  (:meth:`nvc.data.ClipSampler.from_folder`'s ``max_frames``) is cut to its first packets, remuxed without
  re-encoding, so the frames training sees are unchanged. The photos are left out: the real-clips recipe
  (``photo_prob = 0``) does not read them.

When the kit and the tracked files would not travel together (the shipped weights grow with the model), the
largest source is cut shorter (a video) or loses its last frames (a folder of frames), at most half of it each
time, the largest again after each cut, until they fit with ``MARGIN`` to spare, and the manifest says so; if even
that cannot fit, it exits 2. Sizes are counted as the disk blocks files take (:func:`disk_bytes`): the device tool refused
a tree of 66.9 MB in bytes that took 68.0 MB on disk (2026-12-04)::

    python benchmarks/device_kit.py                   # then: run(command="bash benchmarks/device_train.sh ...",
                                                      #           carry=[".devkit"])
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

CARRY_LIMIT = 64 * 2**20  # the device tool's limit on what travels (tracked files + carried folders)
MARGIN = 2**20  # what cutting to fit leaves free (1 MiB), for small commits made before the kit travels
REPO = Path(__file__).resolve().parent.parent


def max_frames() -> int:
    from nvc.data import ClipSampler

    return int(inspect.signature(ClipSampler.from_folder).parameters["max_frames"].default)


def download(dest: Path) -> None:
    """The three packages, at the versions installed here, as files pip installs with --no-index."""
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest)]
    plat = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux2014_x86_64"]
    subprocess.run(pip + plat + [f"av=={version('av')}", f"construct=={version('construct')}",
                                 f"pytorch-msssim=={version('pytorch-msssim')}"], check=True)
    subprocess.run(pip + ["--no-binary=:all:", f"compressai=={version('compressai')}"], check=True)


def cut(src: Path, dst: Path, frames: int) -> int:
    """Copies ``src``, or remuxes its first ``frames`` video packets when it has more; returns the packets kept."""
    import av

    with av.open(str(src)) as c:  # count packets: a header's frame count can be missing or wrong (tree.avi)
        s = c.streams.video[0]
        total = sum(1 for pkt in c.demux(s) if pkt.dts is not None)
    if total <= frames:
        shutil.copyfile(src, dst)
        return total
    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        for pkt in inp.demux(s):
            if pkt.dts is None:  # the demuxer's flush packet
                continue
            if n == frames:
                break
            pkt.stream = o
            out.mux(pkt)
            n += 1
    return n


def cut_to_fit(src: Path, dst: Path, frames: int, excess: int) -> int:
    """Cuts ``dst`` (``src``'s first ``frames`` packets) shorter until it is ``excess`` bytes smaller (or one
    packet long); returns the packets kept."""
    target = dst.stat().st_size - excess
    n = frames
    while dst.stat().st_size > target and n > 1:
        size = dst.stat().st_size
        n = max(1, min(n - 1, int(n * target / size)))
        dst.unlink()
        n = cut(src, dst, n)
    return n


def disk_bytes(p: Path) -> int:
    """A file's size as the device tool counts it: its disk blocks, or its bytes where those are more."""
    st = p.stat()
    return max(st.st_size, st.st_blocks * 512)


def tree_bytes(root: Path) -> int:
    """:func:`disk_bytes` of a file, or of every file under a folder."""
    return disk_bytes(root) if root.is_file() else sum(disk_bytes(f) for f in root.rglob("*") if f.is_file())


def trim_folder(folder: Path, excess: int, keep: int = 2) -> int:
    """Deletes a folder of frames' last files (by name) until ``excess`` bytes are freed or ``keep`` are left;
    returns the files kept."""
    names = sorted(f for f in folder.iterdir() if f.is_file())
    while names and len(names) > keep and excess > 0:
        last = names.pop()
        excess -= disk_bytes(last)
        last.unlink()
    return len(names)


def tracked_bytes() -> int:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True).stdout
    return sum(disk_bytes(REPO / n) for n in names.decode().split("\0") if n and (REPO / n).is_file())


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "train"))
    ap.add_argument("--out", default=str(REPO / ".devkit"))
    args = ap.parse_args()
    src, kit = Path(args.data) / "video", Path(args.out)
    if not src.is_dir():
        print(f"device_kit: {src}: no such folder", file=sys.stderr)
        return 2
    if kit.exists():
        shutil.rmtree(kit)
    videos = kit / "data" / "video"
    videos.mkdir(parents=True)
    download(kit / "wheels")
    limit, files = max_frames(), {}
    for p in sorted(src.iterdir()):
        dst = videos / p.name
        if p.is_dir():
            shutil.copytree(p, dst)
            files[p.name] = "copied"
        else:
            n = cut(p, dst, limit)
            files[p.name] = f"{n} packets" + (" (copied)" if sha256(p) == sha256(dst) else " (remuxed)")
    tracked = tracked_bytes()
    kit_bytes = tree_bytes(kit)
    stuck: set[str] = set()  # sources that cannot shrink further (one packet, or two frames, left)
    while kit_bytes + tracked > CARRY_LIMIT - MARGIN:
        size = {n: tree_bytes(videos / n) for n in files if n not in stuck}
        if not size:
            break
        name = max(size, key=size.get)  # the largest source loses at most half, so the cuts spread over them
        excess = min(kit_bytes + tracked - (CARRY_LIMIT - MARGIN), size[name] // 2)
        if (videos / name).is_dir():
            n = trim_folder(videos / name, excess)
            files[name] = f"copied, its first {n} frames (trimmed to fit the limit)"
        else:
            n = cut_to_fit(src / name, videos / name, limit, excess)
            files[name] = f"{n} packets (remuxed; cut shorter than {limit} to fit the limit)"
        before, kit_bytes = kit_bytes, tree_bytes(kit)
        if kit_bytes >= before:
            stuck.add(name)
        print(f"device_kit: {name}: {files[name]}, {before - kit_bytes:,} bytes freed of {excess:,}", file=sys.stderr)
    total = kit_bytes + tracked
    manifest = {"source": str(src), "max_frames": limit, "videos": files,
                "wheels": sorted(f.name for f in (kit / "wheels").iterdir()),
                "kit_bytes": kit_bytes, "travels_bytes": total, "limit_bytes": CARRY_LIMIT}
    (kit / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))
    if total > CARRY_LIMIT:
        print(f"device_kit: {total:,} bytes would travel, over the {CARRY_LIMIT:,}-byte limit", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
