"""A quick pass of the decoder fuzz harness (benchmarks/fuzz_decode.py runs the long one)."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import load_script

fuzz = load_script("fuzz_decode")


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return fuzz.Harness(tmp_path_factory.mktemp("fuzz"))


def test_seed_stream_decodes(harness):
    assert harness.decode_bytes(harness.seed_stream) == "ok"


@pytest.mark.parametrize("kind", fuzz.MUTATIONS)
def test_mutations_only_raise_nvc_errors(harness, kind):
    import time

    rng = random.Random(hash(kind) & 0xFFFF)
    for _ in range(12):
        t0 = time.perf_counter()
        harness.decode_bytes(fuzz.mutate(harness.seed_stream, kind, rng))  # NvcError is caught inside
        assert time.perf_counter() - t0 < 5.0


def test_run_names_the_slowest_case(tmp_path):
    res = fuzz.run(len(fuzz.MUTATIONS), 0, tmp_path)
    slow = res["slowest_case"]
    assert sum(res["outcomes"].values()) == res["cases"] and not res["failures"]
    assert 0 <= slow["case"] < res["cases"] and slow["kind"] == fuzz.MUTATIONS[slow["case"]]
    assert slow["outcome"] in res["outcomes"] and slow["seconds"] == res["slowest_case_s"] > 0


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), keep=st.integers(0, 200))
def test_random_bytes_after_valid_prefix(harness, data, keep):
    harness.decode_bytes(harness.seed_stream[:keep] + data)


def _hostile_substreams(seed: int, count: int):
    """rANS strings built to drive CompressAI's decoder far past their end: 0xFF runs make a value
    escape with a huge number of 4-bit chunks (this crashed nvc before the padding bound)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yield b"\xff" * 100_000  # the original reproducer: a segmentation fault
    for trial in range(count):
        n = int(rng.integers(8, 7000))
        data = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        ff = [n - 8, n // 8, n // 2][trial % 3]  # any number of 0xFF bytes (no nibble limit)
        data[:8] = b"\xff" * 8  # the first symbol escapes
        start = [8, n - ff, 8][trial % 3]
        data[start:start + ff] = b"\xff" * ff
        if trial % 3 == 2:
            data[8 + ff:] = bytes(n - 8 - ff)
        yield bytes(data)


def test_hostile_rans_strings_never_read_out_of_bounds(lite):
    import torch

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    s_i, shape, _, ref = lite.compress_frame(x, None, 0)
    s_p, _, _, _ = lite.compress_frame(x, ref, 0)
    refused = 0
    for k, data in enumerate(_hostile_substreams(1, 60)):
        # (weights with block motion code a third substream, the motion field: hostile in the fourth case,
        # with whole-pixel vectors, or half-pixel and overlapped)
        field = [b"\x03\x00\x00", b"\x94\x00\x00"][k // 4 % 2] + data
        strings, ctx = [([data, *s_i[1:]], None), ([s_i[0], data, *s_i[2:]], None), ([data, *s_p[1:]], ref),
                        ([*s_p[:2], field][:len(s_p)], ref)][k % 4]
        for exact in (False, True):
            try:
                lite.decompress_frame(strings, shape, ctx, 0, exact=exact)
            except ValueError:
                refused += 1
    assert refused > 0  # and, above all, the process is still alive



def test_escaped_values_code_and_decode(lite):
    """Values out of the coded range (a scene cut coded as a P frame makes them) are escaped with runs
    of 0xF nibbles. The withdrawn limit (``len / 4 + 64`` of them) refused such strings, and nvc's own
    encoder failed on a real clip's scene cut (bikes, frame 30 of a 352x256 crop)."""
    import torch

    from nvc.models.layers import check_string

    z = torch.full((1, 64, 2, 3), 400.0)
    z[:, ::2] = -400.0
    strings, z_hat = lite.i_z.compress(z)
    assert check_string(strings[0], z[0].numel()) > len(strings[0]) // 4 + 64  # what the old rule refused
    assert torch.equal(lite.i_z.decompress(strings, (2, 3)), z_hat)
