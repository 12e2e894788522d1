"""patternc: declarative sparse attention patterns compiled to fused Triton flash kernels.

    >>> import patternc
    >>> p = patternc.parse("global(first, eos) + window(3) + random(2)")
    >>> print(p)
    global(0, -1) + random(2, block=64, seed=0) + window(3)
    >>> p.layout(1024, block_m=128, block_n=128).num_listed
    52

The pipeline, one package or module per stage (imports flow one way): lang (text →
`Pattern`) → components, ir, optimize, resolve (meaning at given lengths) → layout (block
sparsity) → kernels (generated mask + static flash kernels) → plan (`KernelPlan`: tiles,
layouts, params, one bounded cache) → ops (launches, autograd) → nn (`attention_from`).
"""

from ._version import __version__
from .errors import PatterncError
from .lang import load, parse
from .layout import BlockLayout
from .nn import attention_from, precompile
from .pattern import Pattern
from .reference import reference_attention

__all__ = ["parse", "load", "attention_from", "precompile", "reference_attention", "Pattern", "BlockLayout", "PatterncError",
           "__version__"]
