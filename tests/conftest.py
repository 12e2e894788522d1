"""Test setup: run the generated Triton kernels in the interpreter when there is no GPU.

TRITON_INTERPRET must be set before any kernel module is imported (Triton decides at
decoration time), so it is set here, at collection. Kernel sources go to a fresh cache
directory per test session.
"""

import os
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("PATTERNC_CACHE_DIR", tempfile.mkdtemp(prefix="patternc-test-cache-"))
