"""A quick pass of the decoder fuzz harness (benchmarks/fuzz_decode.py runs the long one)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_spec = importlib.util.spec_from_file_location(
    "fuzz_decode", Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_decode.py"
)
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


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


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), keep=st.integers(0, 200))
def test_random_bytes_after_valid_prefix(harness, data, keep):
    harness.decode_bytes(harness.seed_stream[:keep] + data)
