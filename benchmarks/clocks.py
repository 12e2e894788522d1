"""SM clock, power and throttle reasons while one pattern's forward (or forward+backward) runs
in a loop: whether the kernels run power-capped (then idle gaps removed buy nothing, and only
less energy per tile does).

    python benchmarks/clocks.py P4:16384 [fwd|fb] [patternc|flex|cudnn] [option=value ...]

Samples NVML every ~20 ms for ~3 s of back-to-back calls (B=2, H=16, D=128, bf16) and prints the
median SM clock, power, and the share of samples with each throttle reason set.
"""

import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from patterns import PATTERNS, warm_gpu  # noqa: E402

import patternc  # noqa: E402

REASONS = {0x1: "gpu_idle", 0x2: "app_clocks", 0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal",
           0x40: "hw_thermal", 0x80: "hw_power_brake"}


def main():
    import pynvml

    name, n = sys.argv[1].rsplit(":", 1)
    which = sys.argv[2] if len(sys.argv) > 2 else "fb"
    method = sys.argv[3] if len(sys.argv) > 3 else "patternc"
    opts = {k: int(v) for k, v in (kv.split("=") for kv in sys.argv[4:])}
    n = int(n)
    q, k, v = (torch.randn(2, 16, n, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    text = PATTERNS.get(name, name)
    if method == "flex":  # compiled, with the pattern's BlockMask (as benchmarks/ab.py times it)
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        mask = create_block_mask(patternc.parse(text).to_flex(n, n), None, None, n, n, device="cuda")
        flex = torch.compile(flex_attention, dynamic=False)
        attn = lambda q, k, v: flex(q, k, v, block_mask=mask)  # noqa: E731
    elif method == "cudnn":  # SDPA's cuDNN backend: causal and `all` only
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def attn(q, k, v):
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=text == "causal")
    else:
        attn = patternc.attention_from(text, **opts)

    def call():
        out = attn(q, k, v)
        if which == "fb":
            out.backward(torch.ones_like(out))

    call()
    warm_gpu()
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                            pynvml.nvmlDeviceGetPowerUsage(h) / 1000,
                            pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h)))
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < 3:
        for _ in range(10):
            call()
        torch.cuda.synchronize()
        calls += 10
    stop.set()
    t.join()
    clocks = torch.tensor([s[0] for s in samples], dtype=torch.float)
    power = torch.tensor([s[1] for s in samples])
    limit = pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000
    max_clock = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)
    shares = {r: sum(1 for s in samples if s[2] & bit) / len(samples) for bit, r in REASONS.items()}
    print(f"{method} {name} {n} {which} {opts}: {calls} calls, {len(samples)} samples; SM clock median "
          f"{clocks.median():.0f} MHz (max {max_clock}), power median {power.median():.0f} W "
          f"(limit {limit:.0f}); throttle " + ", ".join(f"{r} {v:.0%}" for r, v in shares.items() if v))


if __name__ == "__main__":
    main()
