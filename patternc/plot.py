"""Pictures of a pattern (``patternc show --out``): its token mask when small, else its block map.

matplotlib is optional (``pip install "patternc[viz]"``) and imported only when a picture is
drawn, through the Agg backend (no display); nothing here changes pyplot's global state.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from .errors import PatterncError
from .pattern import Pattern

FORMATS = (".png", ".svg", ".pdf")
MAX_CELLS = 1024  # larger block maps are drawn one cell per s x s blocks, as `BlockLayout.picture` does
_TOKEN_COLOURS = ["#f3f3f3", "#1f4e79"]  # does not attend, attends
_BLOCK_COLOURS = ["#f3f3f3", "#f0a030", "#1f4e79"]  # empty, partial, full (the values of `BlockLayout.to_dense`)


def save_picture(pattern: Pattern, q_len: int, kv_len: int, path, *, tokens: bool, block_m: int = 128,
                 block_n: int = 128) -> str:
    """Draw ``pattern``'s token mask (``tokens``) or its block layout into ``path`` (.png, .svg or
    .pdf) and return a one-line description of what was written."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise PatterncError(f"cannot draw '{path}': the picture must be a {', '.join(FORMATS)} file")
    mpl = _matplotlib()
    figure = mpl.figure.Figure(figsize=(7, 7.4), layout="constrained")
    mpl.backends.backend_agg.FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    title = textwrap.fill(str(pattern), 70)
    if tokens:
        mask = pattern.dense_mask(q_len, kv_len)
        image, colours = mask.to(torch.uint8), _TOKEN_COLOURS
        legend = ["does not attend", "attends"]
        axes.set(xlabel="key j", ylabel="query i")
        title += f"\n{q_len} queries x {kv_len} keys: density {mask.float().mean().item():.3%}"
        what = f"token mask, {q_len} x {kv_len}"
    else:
        layout = pattern.layout(q_len, kv_len, block_m, block_n)
        image, scale = _cells(layout.to_dense())
        colours = _BLOCK_COLOURS
        legend = [f"empty ({layout.num_empty:,})", f"partial ({layout.num_partial:,})", f"full ({layout.num_full:,})"]
        axes.set(xlabel="key block", ylabel="query block")
        title += (f"\n{q_len} x {kv_len} tokens in {block_m}x{block_n} blocks: density {layout.density:.3%}, "
                  f"{layout.block_density:.2%} of tiles listed")
        if scale > 1:
            axes.set(xlabel=f"key block / {scale}", ylabel=f"query block / {scale}")
            title += f"\n(1 cell = {scale}x{scale} blocks: full or empty if all its blocks are)"
        what = f"block map, {layout.num_q_blocks} x {layout.num_kv_blocks} blocks of {block_m}x{block_n}"
    axes.imshow(image.numpy(), cmap=mpl.colors.ListedColormap(colours), vmin=0, vmax=len(colours) - 1,
                interpolation="nearest")
    axes.set_title(title, fontsize=9)
    handles = [mpl.patches.Patch(facecolor=c, edgecolor="#888888", label=t) for c, t in zip(colours, legend)]
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    try:
        figure.savefig(path, dpi=150, bbox_inches="tight", pad_inches=0.15)
    except OSError as exc:
        raise PatterncError(f"cannot write picture to '{path}': {exc.strerror or exc}") from None
    return f"wrote {path}: {what}"


def _cells(blocks: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The block map at most `MAX_CELLS` cells wide: one cell per ``s x s`` blocks, full (2) or
    empty (0) when all its blocks are, else partial (1); and ``s``."""
    s = -(-max(blocks.shape) // MAX_CELLS)
    if s == 1:
        return blocks, 1
    rows, cols = -(-blocks.shape[0] // s), -(-blocks.shape[1] // s)
    padded = torch.full((rows * s, cols * s), -1, dtype=torch.int8)  # -1: outside the grid
    padded[: blocks.shape[0], : blocks.shape[1]] = blocks
    cells = padded.view(rows, s, cols, s)
    full = ((cells == 2) | (cells == -1)).all(3).all(1)
    empty = ((cells == 0) | (cells == -1)).all(3).all(1)
    return torch.where(full, 2, torch.where(empty, 0, 1)).to(torch.int8), s


def _matplotlib():
    """The matplotlib modules the pictures use, or a `PatterncError` saying how to install it."""
    try:
        import matplotlib.backends.backend_agg
        import matplotlib.colors
        import matplotlib.figure
        import matplotlib.patches
    except ImportError:
        raise PatterncError('pictures need matplotlib: pip install "patternc[viz]"') from None
    return matplotlib
