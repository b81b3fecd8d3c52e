"""nvc.ladder: per-frame quality offsets (torch-free)."""

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvc.errors import InputError
from nvc.ladder import DEFAULT_LADDER, FLAT, QualityLadder, ladder_for


def test_offsets_and_cap():
    assert [QualityLadder(1, 2, 2).quality(0, k, 5) for k in range(5)] == [1, 0, 2, 0, 2]
    assert QualityLadder(3, 0, 1).quality(1, 4, 5) == 1  # no period: P frames stay
    assert DEFAULT_LADDER.quality(8, 0, 9) == 9  # capped at the top
    assert FLAT.quality(2, 0, 9) == 2
    assert ladder_for(True) is FLAT and ladder_for(False) is DEFAULT_LADDER
    with pytest.raises(InputError, match="0 or more"):
        QualityLadder(-1)


@given(st.integers(0, 5), st.integers(0, 8), st.integers(0, 3), st.integers(0, 20), st.integers(0, 40), st.integers(0, 20))
def test_never_below_base_nor_above_top(intra, period, boost, base, position, top):
    q = QualityLadder(intra, period, boost).quality(base, position, top)
    assert q >= min(base, top) if base <= top else q == base
    assert q <= max(top, base)


def test_words():
    assert FLAT.describe() == "flat" and FLAT.sentence() == "every frame at the same quality"
    assert QualityLadder(3, 4, 1).describe() == "I frames +3, P frames at GoP positions 4, 8, ... +1, up to the top quality"
    assert QualityLadder(3, 4, 1).sentence() == "I frames get 3 more and every 4th P frame 1 more, up to the top"
    assert QualityLadder(2, 2, 1).sentence() == "I frames get 2 more and every 2nd P frame 1 more, up to the top"
    assert QualityLadder(0, 3, 1).sentence() == "every 3rd P frame 1 more, up to the top"


def test_cli_help_states_the_default_ladder():
    code = ("import sys; from nvc.ladder import DEFAULT_LADDER; import nvc.ladder; "
            "assert 'torch' not in sys.modules; print(DEFAULT_LADDER.sentence())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    from typer.testing import CliRunner

    from nvc.cli import app

    res = CliRunner().invoke(app, ["encode", "--help"], env={"COLUMNS": "400"})
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert out[:1].upper() + out[1:] in text and "P frame" in text  # as written, not lower-cased
    from nvc.ladder import DEFAULT_LAMBDA

    assert f"lambda {DEFAULT_LAMBDA:g}" in text


def test_default_refinement_steps_are_the_models_and_the_helps():
    from typer.testing import CliRunner

    from nvc.cli import app
    from nvc.ladder import DEFAULT_INTER_REFINE, DEFAULT_INTRA_REFINE
    from nvc.models.lite import NvcLite

    assert (NvcLite.intra_refine, NvcLite.inter_refine) == (DEFAULT_INTRA_REFINE, DEFAULT_INTER_REFINE)
    res = CliRunner().invoke(app, ["encode", "--help"], env={"COLUMNS": "400"})
    text = " ".join(res.output.split())
    assert f"I frames {DEFAULT_INTRA_REFINE} steps and P frames {DEFAULT_INTER_REFINE}" in text
