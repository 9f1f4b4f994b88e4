"""Sources: where micro-batches come from. Tab-complete ``rtnb.sources.`` for the catalogue."""

from rtnb.sources.base import Source
from rtnb.sources.replay import replay

__all__ = ["Source", "replay"]
