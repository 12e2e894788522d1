"""Test setup: kernel sources go to a fresh cache directory per session, and kernel outputs
are allocated NaN-filled (so an element the kernels never write fails every comparison).

Without a GPU, Triton is put in interpreter mode for the whole test process. patternc itself
chooses the interpreter per call, but Triton's own helpers are compiled-or-interpreted from
the moment `triton` is imported, and torch's compile and test utilities import it early; a
CPU-only user who mixes them does the same (README). The fresh-process behaviour, without
the variable, is tested in subprocesses (tests/test_pipeline.py).
"""

import math
import os
import tempfile

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("PATTERNC_CACHE_DIR", tempfile.mkdtemp(prefix="patternc-test-cache-"))


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    from patternc.ops import launch

    def nan_empty(shape, dtype, device):
        return torch.full(shape, math.nan, dtype=dtype, device=device)

    monkeypatch.setattr(launch, "empty", nan_empty)
