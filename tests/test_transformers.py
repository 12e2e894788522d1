"""Hugging Face transformers: a tiny randomly initialised Llama-style model (no download)
runs with attn_implementation=<patternc pattern> and matches the eager implementation given
the same dense mask; cached generation equals uncached; padding is refused, never ignored."""

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

import patternc
from patternc.integrations import transformers as hf

PATTERN = "(global(first) + window(left=5, right=0) + random(1, block=4)) & causal"
CONFIG = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def models(name, **options):
    hf.register(name, PATTERN, **options)
    torch.manual_seed(0)
    ours = AutoModelForCausalLM.from_config(copy.deepcopy(CONFIG), attn_implementation=name).eval()
    eager = AutoModelForCausalLM.from_config(copy.deepcopy(CONFIG), attn_implementation="eager").eval()
    eager.load_state_dict(ours.state_dict())
    assert (ours.config._attn_implementation, eager.config._attn_implementation) == (name, "eager")
    return ours, eager


@pytest.mark.parametrize("backend", ["kernels", "reference"])
def test_logits_match_eager_attention_with_the_same_dense_mask(backend):
    ours, eager = models(f"patternc_{backend}", backend=backend)
    ids = torch.randint(0, 97, (2, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = ours(ids).logits
        want = eager(ids, attention_mask=hf.dense_mask_4d(PATTERN, 2, 37, 37)).logits
    assert (got - want).abs().max() < 1e-4
    with torch.no_grad():  # the pattern really matters: plain causal attention differs
        assert (eager(ids).logits - want).abs().max() > 1e-3


def test_cached_generation_equals_uncached():
    """Without `random`: its draws depend on the number of key blocks, which grows with the
    cache (docs/language.md), so earlier tokens' keys would differ from a full recomputation."""
    hf.register("patternc_generate", "(global(first) + window(left=5, right=0)) & causal", backend="reference")
    torch.manual_seed(0)
    ours = AutoModelForCausalLM.from_config(copy.deepcopy(CONFIG), attn_implementation="patternc_generate").eval()
    prompt = torch.randint(0, 97, (2, 10), generator=torch.Generator().manual_seed(2))
    with_cache = ours.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=0)
    without = ours.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=0)
    assert torch.equal(with_cache, without)


def test_padding_masks_are_refused_not_ignored():
    ours, _ = models("patternc_padding", backend="reference")
    ids = torch.randint(0, 97, (2, 12))
    with pytest.raises(patternc.PatterncError, match="padding masks are not supported"):
        ours(ids, attention_mask=torch.tensor([[1] * 12, [0] * 3 + [1] * 9]))
    assert ours(ids, attention_mask=torch.ones(2, 12, dtype=torch.long)).logits.shape == (2, 12, 97)
