"""Kernels: the static flash-attention kernels (`flash.py`), the generated mask functions
(`emit`), their on-disk cache (`cache`), compilation in parallel processes (`parallel`) and
relaunches through Triton's C launcher (`prepared`). `cache`, `parallel` and `prepared` are
the only modules that import Triton, and only when a kernel runs."""
