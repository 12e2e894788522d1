"""Hugging Face transformers (v5): run a model's attention with a patternc pattern.

    from patternc.integrations import transformers as patternc_hf
    patternc_hf.register("sparse", "(global(first) + window(left=256, right=0)) & causal")
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sparse")

`register` installs both halves transformers needs: an attention function
(``AttentionInterface``), which calls `attention_from`, and a mask function
(``AttentionMaskInterface``; without it transformers silently drops the mask), which checks
what the model asks for instead of building a dense mask: the pattern *is* the mask. The
pattern replaces the model's causal mask, so write ``& causal`` for a decoder. Queries sit at
positions ``Lk - Lq`` onwards (patternc's default offset), which is what a growing KV cache
gives, so a decoding step sees the keys a full pass over the same keys sees. (``random``
draws depend on the number of key blocks, which grows with the cache: cached generation then
differs from recomputing everything, as docs/language.md explains.) Refused with a clear
`PatterncError` rather than ignored: a padding mask with padded positions, caches whose keys
do not start at position 0 or that hold unwritten slots (static and sliding caches), and
attention dropout in training.
"""

from __future__ import annotations

import torch

from ..errors import PatterncError
from ..lang import as_pattern
from ..nn import attention_from


def register(name: str, pattern, **options) -> None:
    """Register ``pattern`` (a text or `Pattern`) under ``attn_implementation=name``.

    ``options`` go to `attention_from` (``backend``, tile options).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    attn = attention_from(as_pattern(pattern), **options)

    def mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, attention_mask=None, **kwargs):
        if attention_mask is not None and not bool(attention_mask.all()):
            raise PatterncError(f"attn_implementation={name!r} (patternc): padding masks are not supported; "
                                "pass sequences of equal length without attention_mask, or no padding")
        start = int(q_offset) - int(kv_offset)  # position of the first query, counted from the first key
        if kv_offset != 0 or start != kv_length - q_length:
            raise PatterncError(f"attn_implementation={name!r} (patternc): the queries must be the last {q_length} "
                                f"of {kv_length} keys that start at position 0 (got query offset {q_offset}, "
                                f"key offset {kv_offset}); use the default dynamic cache")
        return None  # nothing to materialize: the pattern is applied inside the kernels

    def forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        if attention_mask is not None:
            raise PatterncError(f"attn_implementation={name!r} (patternc) got a prepared attention mask; "
                                "the pattern is the mask: call the model without a 4-D mask")
        if dropout and module.training:
            raise PatterncError(f"attn_implementation={name!r} (patternc): attention dropout is not supported")
        out = attn(query, key, value, scale=scaling)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register(name, forward)
    AttentionMaskInterface.register(name, mask)


def dense_mask_4d(pattern, batch: int, q_len: int, kv_len: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """The pattern as the additive ``[batch, 1, q_len, kv_len]`` mask an ``eager`` model takes
    (0 where attended, the dtype's minimum elsewhere): the same attention, computed densely."""
    allowed = as_pattern(pattern).dense_mask(q_len, kv_len, device=device)
    bias = torch.zeros(q_len, kv_len, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
    return bias.expand(batch, 1, q_len, kv_len)
