"""Layout build time: patternc's analytic BlockLayout vs FlexAttention's create_block_mask,
both on the CPU, for the lecture example and a BigBird-like pattern, 128x128 blocks.

    python benchmarks/bench_layout.py

patternc: median of 7 builds (layouts are never cached: each call builds afresh) after one
warm-up build of another pattern. FlexAttention: one build of the same pattern's
`Pattern.to_flex` mask (it evaluates the mask_mod on every pair), only where Lq x Lk fits
comfortably in memory."""

import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn.attention.flex_attention import create_block_mask

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import patternc  # noqa: E402

PATTERNS = {
    "lecture": "global(first, eos) + window(3) + random(2)",
    "bigbird": "global(0:64, -64:) + window(383) + random(3, block=64, seed=0)",
}
FLEX_MAX_PAIRS = 16384 * 16384


def time_patternc(p, n):
    times = []
    for _ in range(7):
        t = time.perf_counter()
        lay = p.layout(n, n, 128, 128)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3, lay


def main():
    patternc.parse("window(3) + global(0)").layout(1000)  # warm up torch's CPU kernels once
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"{'pattern':<9}{'N':>8}{'listed':>9}{'full':>7}{'patternc ms':>13}{'flex ms':>10}{'ratio':>8}")
    for name, text in PATTERNS.items():
        p = patternc.parse(text)
        for n in (4096, 16384, 65536, 131072):
            ms, lay = time_patternc(p, n)
            flex = ratio = "-"
            if n * n <= FLEX_MAX_PAIRS:
                t = time.perf_counter()
                create_block_mask(p.to_flex(n, n, device="cpu"), None, None, n, n, device="cpu", BLOCK_SIZE=128)
                flex_ms = (time.perf_counter() - t) * 1e3
                flex, ratio = f"{flex_ms:.1f}", f"{flex_ms / ms:.0f}x"
            print(f"{name:<9}{n:>8}{lay.num_listed:>9}{lay.num_full:>7}{ms:>13.2f}{flex:>10}{ratio:>8}")


if __name__ == "__main__":
    main()
