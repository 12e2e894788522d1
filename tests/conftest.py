"""Test setup: kernel sources go to a fresh cache directory per session, and kernel outputs
are allocated NaN-filled (so an element the kernels never write fails every comparison).

Nothing here enables Triton's interpreter: tests that run kernels on the CPU ask for them per
call (``attention_from(..., backend="kernels")``), as users do.
"""

import math
import os
import tempfile

import pytest
import torch

os.environ.setdefault("PATTERNC_CACHE_DIR", tempfile.mkdtemp(prefix="patternc-test-cache-"))


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    from patternc.ops import launch

    def nan_empty(shape, dtype, device):
        return torch.full(shape, math.nan, dtype=dtype, device=device)

    monkeypatch.setattr(launch, "empty", nan_empty)
