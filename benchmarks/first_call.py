"""First-call (compile) time, cold caches, and whether Triton compiles in parallel threads.

    python benchmarks/first_call.py

Fresh Triton/patternc cache directories. (1) One new structure: the first forward, then the first
backward (wall s, synchronized). (2) Two new structures compiled one after the other, then two
other new structures compiled in two threads at once: if Triton held Python's GIL while it
compiles, the threaded pair would take as long as the serial pair.
"""

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

for var in ("TRITON_CACHE_DIR", "PATTERNC_CACHE_DIR"):
    os.environ[var] = tempfile.mkdtemp(prefix=var.lower())
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

import patternc  # noqa: E402


def inputs():
    q, k, v = (torch.randn(2, 16, 4096, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    return q, k, v


def forward(text):
    q, k, v = inputs()
    patternc.attention_from(text)(q, k, v)


def main():
    forward("window(3)")  # warm the process (CUDA context, imports, the preprocess-free path)
    torch.cuda.synchronize()
    q, k, v = inputs()
    attn = patternc.attention_from("global(first, eos) + window(5) + random(2, block=128)")
    t0 = time.perf_counter()
    out = attn(q, k, v)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    out.backward(torch.randn_like(out))
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    print(f"new structure: first forward {t1 - t0:.2f} s, first backward {t2 - t1:.2f} s")

    serial = ["global(0) + causal", "window(7) & causal"]
    threaded = ["global(-1) + window(left=9, right=0)", "random(1, block=128) + causal"]
    t0 = time.perf_counter()
    for text in serial:
        forward(text)
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    threads = [threading.Thread(target=forward, args=(text,)) for text in threaded]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    torch.cuda.synchronize()
    t2 = time.perf_counter()
    print(f"two new forward kernels: serial {t1 - t0:.2f} s, in two threads {t2 - t1:.2f} s")


if __name__ == "__main__":
    main()
