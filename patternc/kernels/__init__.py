"""Kernels: the static flash-attention kernels (`flash.py`), the generated mask functions
(`emit`) and their on-disk cache (`cache`). `cache` and `patternc.ops` are the only code that
imports Triton, and only when a kernel runs."""
