"""benchmarks/data_mix.py: each source's frames, shots and share of the sampler's clips, as the sampler sees them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from .conftest import REPO, load_script, make_frames, write_y4m


def _folder(root):
    shots = root / "video" / "cut"
    shots.mkdir(parents=True)
    for i in range(13):  # 8 dark frames, then a scene cut to 5 bright ones
        Image.fromarray(np.full((32, 48, 3), 10 if i < 8 else 240, np.uint8)).save(shots / f"{i:03d}.png")
    write_y4m(root / "video" / "short.y4m", make_frames(5, 48, 32))
    (root / "images").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / "photo.png")  # photos are not counted
    return root


def test_shots_and_shares(tmp_path) -> None:
    mix = load_script("data_mix").mix(_folder(tmp_path), frames=6)
    assert set(mix) == {"video/cut", "video/short.y4m"}
    cut, short = mix["video/cut"], mix["video/short.y4m"]
    assert (cut["frames"], cut["shots"], cut["shot_frames"], cut["usable_shots"]) == (13, 2, [8, 5], 1)
    assert (short["frames"], short["shots"], short["usable_shots"], short["size"]) == (5, 1, 0, "48x32")
    assert (cut["clip_share"], short["clip_share"]) == (1.0, 0.0)
    assert load_script("data_mix").mix(tmp_path, frames=5)["video/cut"]["clip_share"] == round(2 / 3, 4)


def test_cli_json_and_missing_folder(tmp_path) -> None:
    out = tmp_path / "mix.json"
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_mix.py"), str(_folder(tmp_path / "d")),
                        "--json", str(out)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["frames"] == 6 and "video/cut" in r.stdout
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_mix.py"), str(tmp_path / "nope")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nope'}: no such folder"
