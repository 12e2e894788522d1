import gc, os, sys, tempfile, time
for var in ("TRITON_CACHE_DIR", "PATTERNC_CACHE_DIR"):
    os.environ[var] = tempfile.mkdtemp()
sys.path.insert(0, "benchmarks")
import torch, patternc
from patterns import PATTERNS
mode = sys.argv[1]
if mode == "gcfreeze":
    pass
q = torch.randn(2, 16, 4096, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
k, v = (torch.randn(2, 16, 4096, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
do = torch.randn_like(q)
attn = patternc.attention_from(PATTERNS["P1"])
t0 = time.perf_counter()
attn(q, k, v).backward(do)
torch.cuda.synchronize()
if mode == "gcfreeze":
    gc.collect(); gc.freeze()
print(mode, f"first fwd+bwd {time.perf_counter() - t0:.2f} s", flush=True)
start = time.perf_counter()
line = []
while time.perf_counter() - start < 6:
    t = time.perf_counter()
    for _ in range(20):
        attn(q, k, v).backward(do)
    torch.cuda.synchronize()
    line.append(f"{time.perf_counter() - start:.1f}s:{(time.perf_counter() - t) / 20 * 1e3:.2f}")
print("  f+b ms per call over time:", " ".join(line), flush=True)
print("  gc counts", gc.get_count(), "gc stats gen2 collections", gc.get_stats()[2]["collections"], flush=True)
