"""Quality ladders (the encoder's per-frame quality offsets) and its default refinement steps (torch-free, so
the CLI's help can read them)."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

# The rate-distortion weight of the default quality of models with per-quality lambdas (nvc-lite,
# :func:`nvc.models.base.default_quality`): the operating point the default has coded at since run 15 (the
# middle of its eight qualities, as of runs 16 and 20), kept when qualities are added at either end.
DEFAULT_LAMBDA = 0.0075

# The encoder's default latent refinement steps for nvc-lite's I and P frames of up to 2^19 pixels
# (NvcLite.intra_refine / inter_refine; chosen on training clips, the model card has the measurements).
DEFAULT_INTRA_REFINE = 10
DEFAULT_INTER_REFINE = 4
# ... and of the hyper-latent, on every frame (NvcLite.hyper_refine: cheap, and it stops the P-frame blow-ups of
# larger frames, which the latent refinement does not reach)
DEFAULT_HYPER_REFINE = 4


@dataclass(frozen=True)
class QualityLadder:
    """Per-frame quality offsets over a session's quality, capped at the model's top quality.

    I frames get ``intra`` more; P frames at positions ``period``, ``2 * period``, ... of a GoP get ``boost``
    more (a better reference for the frames after them). The decoder reads each frame's quality from its
    record, so a ladder is the encoder's choice alone, like x264's I/P ratio.
    """

    intra: int = 0
    period: int = 0
    boost: int = 0

    def __post_init__(self) -> None:
        if min(self.intra, self.period, self.boost) < 0:
            raise InputError(f"quality ladder offsets must be 0 or more: {self}")

    def describe(self) -> str:
        """In words, e.g. for a benchmark's protocol."""
        parts = [f"I frames +{self.intra}"] if self.intra else []
        if self.period and self.boost:
            parts.append(f"P frames at GoP positions {self.period}, {2 * self.period}, ... +{self.boost}")
        return ", ".join(parts) + ", up to the top quality" if parts else "flat"

    def sentence(self) -> str:
        """For help texts, e.g. "I frames get 3 more and every 4th P frame 1 more, up to the top"."""
        parts = [f"I frames get {self.intra} more"] if self.intra else []
        if self.period and self.boost:
            parts.append(f"every {_ordinal(self.period)} P frame {self.boost} more")
        return " and ".join(parts) + ", up to the top" if parts else "every frame at the same quality"

    def quality(self, base: int, position: int, top: int) -> int:
        """The quality of the frame at ``position`` of its GoP (0: the I frame)."""
        if position == 0:
            step = self.intra
        else:
            step = self.boost if self.period and position % self.period == 0 else 0
        return min(base + step, top) if base <= top else base


# Chosen on training clips with benchmarks/train_clip_check.py (the model card has the sweep of ladders).
DEFAULT_LADDER = QualityLadder(intra=3, period=4, boost=1)
FLAT = QualityLadder()


def ladder_for(flat_quality: bool) -> QualityLadder:
    """The ladder the ``flat_quality`` switch of the API, CLI and bench selects."""
    return FLAT if flat_quality else DEFAULT_LADDER


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
