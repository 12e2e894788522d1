"""Decoding: a few new queries against a long KV cache, against the memory-bound floor.

    python benchmarks/decode.py [--kv-lens 65536,131072] [--q-lens 1,16] [--out FILE]

B=8, 32 query heads / 8 kv heads, D=128, bf16 (issue 8's decoding row). For each pattern and
(Lq, Lk): patternc's forward time (median of triton.testing.do_bench), FlexAttention (compiled,
same BlockMask semantics), patternc captured in a CUDA graph (`graphed`: no per-call Python or
launch overhead, as decoders run their steps), and SDPA (dense, the whole cache: what a user without a sparse kernel
runs), and the floor: the K/V bytes the layout touches, read once, at the copy bandwidth this GPU
measures (a device-to-device copy of 2 GiB: bytes read + bytes written, over time). ratio =
time / floor; the target is <= 1.25. Outputs are checked against SDPA with the pattern's dense mask first.
"""

import argparse
import sys
from pathlib import Path

import torch
import triton
from patterns import PATTERNS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import patternc  # noqa: E402
from patternc.plan import plan_for  # noqa: E402

B, HQ, HKV, D = 8, 32, 8, 128


def copy_bandwidth() -> float:
    """Bytes moved per second by a device-to-device copy (read + written)."""
    x = torch.empty(2**30, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median")
    return 2 * x.numel() * x.element_size() / (ms * 1e-3)


def touched_bytes(pattern, lq: int, lk: int, block_n: int, block_m: int) -> int:
    """K and V bytes of the key tiles the forward layout visits (each tile counted once per kv head)."""
    lay = pattern.layout(lq, lk, block_m, block_n)
    tiles = set()
    for csr in (lay.full, lay.partial):
        tiles.update(csr.indices.tolist())
    rows = sum(min(block_n, lk - t * block_n) for t in tiles)
    return rows * D * 2 * 2 * B * HKV


def graphed(call):
    """``call`` captured in a CUDA graph (after a warm-up on a side stream, which also builds the
    plan outside the capture), as a function that replays it: the GPU time of a decoding step
    without per-call Python and launch costs, as decoders that capture their steps run it. The
    inputs stay where they are (a graph replays with their addresses): no copy is timed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph.replay


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kv-lens", default="65536,131072")
    ap.add_argument("--q-lens", default="1,16")
    ap.add_argument("--only", default="P2,P4,causal")
    ap.add_argument("--out")
    ap.add_argument("--options", default="", help="attention_from options, k=v,k=v")
    ap.add_argument("--min-split-tiles", type=int, help="patternc.ops.launch.MIN_SPLIT_TILES for this run")
    args = ap.parse_args()
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    torch._dynamo.config.cache_size_limit = 64
    options = {k: int(v) for k, v in (o.split("=") for o in args.options.split(",") if o)}
    if args.min_split_tiles:
        from patternc.ops import launch
        launch.MIN_SPLIT_TILES = args.min_split_tiles
    bw = copy_bandwidth()
    lines = [f"$ python {' '.join(sys.argv)}",
             f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; "
             f"B={B} Hq={HQ} Hkv={HKV} D={D} bf16; copy bandwidth {bw / 1e9:.0f} GB/s (read + write)", "",
             "| pattern | Lq | Lk | touched MB | floor us | patternc us | patternc graphed us | flex us | sdpa (dense) us "
             "| patternc / floor | graphed / floor | flex / patternc | check |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for name in args.only.split(","):
        p = patternc.parse(PATTERNS[name])
        for lk in map(int, args.kv_lens.split(",")):
            for lq in map(int, args.q_lens.split(",")):
                gen = torch.Generator(device="cuda").manual_seed(0)
                q = torch.randn(B, HQ, lq, D, device="cuda", dtype=torch.bfloat16, generator=gen)
                k, v = (torch.randn(B, HKV, lk, D, device="cuda", dtype=torch.bfloat16, generator=gen) for _ in range(2))
                attn = patternc.attention_from(p, **options)
                out = attn(q, k, v)
                plan = plan_for(p, lq, lk, None, q.device, q.dtype, D, options)
                floor = touched_bytes(p, lq, lk, plan.fwd.block_n, plan.fwd.block_m) / bw * 1e6
                mask = p.dense_mask(lq, lk).to("cuda")
                ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
                ok = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
                t_pc = triton.testing.do_bench(lambda: attn(q, k, v), warmup=25, rep=100, return_mode="median") * 1e3
                try:
                    bm = create_block_mask(p.to_flex(lq, lk), None, None, lq, lk, device="cuda")
                    t_fx = triton.testing.do_bench(lambda: flex(q, k, v, block_mask=bm, enable_gqa=True),
                                                   warmup=25, rep=100, return_mode="median") * 1e3
                except Exception as exc:  # noqa: BLE001
                    print(f"flex {name} {lq} {lk}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
                    t_fx = float("nan")
                try:
                    t_gr = triton.testing.do_bench(graphed(lambda: attn(q, k, v)), warmup=25, rep=100,
                                                   return_mode="median") * 1e3
                except Exception as exc:  # noqa: BLE001
                    print(f"graphed {name} {lq} {lk}: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
                    t_gr = float("nan")
                t_sd = triton.testing.do_bench(
                    lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                    warmup=25, rep=100, return_mode="median") * 1e3
                mb = touched_bytes(p, lq, lk, plan.fwd.block_n, plan.fwd.block_m) / 1e6
                line = (f"| {name} | {lq} | {lk} | {mb:.1f} | {floor:.1f} | {t_pc:.1f} | {t_gr:.1f} | {t_fx:.1f} | "
                        f"{t_sd:.1f} | {t_pc / floor:.2f} | {t_gr / floor:.2f} | {t_fx / t_pc:.2f} | "
                        f"{'ok' if ok < 2e-2 else 'FAIL'} {ok:.1e} |")
                lines.append(line)
                print(line, flush=True)
                del q, k, v, mask
                torch.cuda.empty_cache()
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
