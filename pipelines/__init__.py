"""Data pipelines: DALI on GPU, DALI on CPU, and a PyAV/OpenCV fallback, behind one contract.

``make_loader(index, ...)`` returns a :class:`ClipLoader`; see ``pipelines.loader`` for the
contract and ``pipelines.routing`` for how "auto" picks a backend. Importing this package is
cheap: PyAV, OpenCV and DALI are imported when a loader first needs them.
"""

from pipelines.loader import ClipCache, ClipLoader, CodecRefused, make_loader, shared_cache
from pipelines.routing import BACKENDS

__all__ = ["BACKENDS", "ClipCache", "ClipLoader", "CodecRefused", "make_loader", "shared_cache"]
