"""Block layouts: the data (`blocks`) and how it is built without N² work (`build`)."""

from .blocks import CSR, BlockLayout
from .build import Grid, build_layout

__all__ = ["CSR", "BlockLayout", "Grid", "build_layout"]
