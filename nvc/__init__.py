"""nvc: a neural video codec with a real, versioned bitstream.

``import nvc`` is light: torch is imported only when a model is needed (``nvc.models``, ``nvc.codec``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import NvcError  # noqa: E402

__all__ = ["NvcError", "__version__"]
