"""Kernels: the static flash-attention kernels (`flash.py`), the generated mask functions
(`emit`), their on-disk cache (`cache`), and compilation in parallel processes (`parallel`).
`cache`, `parallel` and `patternc.ops` are the only code that imports Triton, and only when a
kernel runs."""
