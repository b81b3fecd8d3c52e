from __future__ import annotations

import numpy as np

from nvc.sample import SAMPLE_SIZE, SampleReader, sample_frames, write_sample


def test_sample_is_deterministic_and_moving(tmp_path):
    a = list(sample_frames(3))
    b = list(sample_frames(3))
    assert all(np.array_equal(x.y, y.y) for x, y in zip(a, b))
    assert (a[0].width, a[0].height) == SAMPLE_SIZE
    assert not np.array_equal(a[0].y, a[2].y)
    assert 20 < a[0].y.std() < 80  # textured, not flat
    p = write_sample(tmp_path / "s.y4m", frames=2)
    assert p.stat().st_size > 2 * 352 * 288
    assert SampleReader(4).info.frames == 4
