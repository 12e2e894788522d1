"""GPU golden tests (``pytest -m gpu -s`` on a CUDA machine): bf16 / fp16 / fp32, 1K to 16K
tokens, head dims 64 / 128 / 256, every example pattern, forward and all gradients, with
the kernels' default tile configurations. Each passing case prints its errors (``-s``)."""

import os

import pytest
import torch

import patternc
from test_kernels import EXAMPLES, run_case

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _example(name):
    return patternc.load(os.path.join(os.path.dirname(__file__), "..", "examples", name))


@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_1k(example, dtype, d):
    run_case(_example(example), lq=1024, d=d, dtype=DTYPES[dtype], block=None)


@pytest.mark.parametrize("n", [4096, 16384])
@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_long_bf16(example, n):
    run_case(_example(example), lq=n, d=128, hq=1, dtype=torch.bfloat16, block=None)


@pytest.mark.parametrize("lq,lk,hq,hkv", [(1000, 3000, 4, 2), (3000, 1000, 4, 1), (2047, 2047, 2, 2)])
def test_unequal_lengths_and_gqa(lq, lk, hq, hkv):
    run_case("global(first, eos) + window(3) + random(2)", lq=lq, lk=lk, hq=hq, hkv=hkv, d=64,
             dtype=torch.bfloat16, block=None)
    run_case("(global(0:4) + window(left=255, right=0)) & causal", lq=lq, lk=lk, hq=hq, hkv=hkv, d=128,
             dtype=torch.float16, block=None)


def test_token_level_random_and_fully_masked_rows():
    run_case("random(2, block=1, seed=3) + window(1)", lq=2048, d=64, dtype=torch.bfloat16, block=None)
    run_case("causal", lq=3000, lk=1000, d=64, dtype=torch.float16, block=None)
