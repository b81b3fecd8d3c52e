"""The one error hierarchy of nvc. Every error a user can cause is an :class:`NvcError`.

Each class also subclasses the builtin that describes it best, so ``except ValueError`` keeps working
(the PyAV convention).
"""

from __future__ import annotations


class NvcError(ValueError):
    """Base class: anything nvc refuses or fails to do, with a one-line message."""


class InputError(NvcError):
    """An input file or option is wrong (missing file, wrong size, unsupported format)."""


class UnsupportedFormatError(InputError):
    """The input's pixel format or container is not one nvc can read or convert."""


class OutputExistsError(InputError, FileExistsError):
    """An output exists and ``force`` was not given."""


class BitstreamError(NvcError):
    """A stream is malformed, truncated, damaged or of an unknown version."""


class TruncatedStreamError(BitstreamError):
    """The stream ends before the data it announces."""


class ChecksumError(BitstreamError):
    """A CRC32 in the stream does not match its data."""


class VersionError(BitstreamError):
    """The stream's major format version is unknown to this nvc."""


class ModelError(NvcError):
    """A model name, quality, weights file or checkpoint is unknown, missing or mismatched."""


class WeightsMismatchError(ModelError):
    """A stream was encoded with other weights, or another numeric mode, than the decoder has."""
