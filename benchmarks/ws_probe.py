"""How fast can Triton 3.6 run a flash-attention forward over listed key tiles on Hopper?

    python benchmarks/ws_probe.py [--n 16384] [--offline | --isolate {plain,fourd,select,masked,device}]

A probe for issue 8's lead "warp-specialized kernels", not patternc code: one small kernel
(dense rows: every query block lists all key blocks, in a CSR table like patternc's layouts,
no mask math) in the variants that matter to Triton's Hopper passes:

- ``host``: K/V tiles through host-made TMA descriptors, a plain loop (patternc's forward);
- ``device``: descriptors made in the kernel (`tl.make_tensor_descriptor`), a plain loop;
- ``device-ws``: the same loop as `tl.range(..., warp_specialize=True)`, Triton's automatic
  warp specialization (upstream: on Hopper it partitions attention only with in-kernel
  descriptors and one loop);
- ``host-ws``: warp-specialized on host descriptors: it compiles and partitions, but its
  launches hang on an H100 (`--isolate plain`), so only ``--offline`` lists it;
- ``*-seq``: key blocks walked in order (no index load) instead of read from the table;

each at several tile shapes, beside SDPA's cuDNN and flash backends on the same inputs (B=2,
H=16, D=128, bf16, not causal), each variant checked against cuDNN before it is timed.
``--offline`` only compiles every variant for sm_90 here (registers, shared memory), no GPU.
"""

import argparse
import itertools

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from patterns import cubin_resources


@triton.jit
def probe_fwd(Q, K, V, O, q_desc, k_desc, v_desc, OFFSETS, INDICES, qk_scale, ROWS,
              N: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              DEVICE_DESC: tl.constexpr, WS: tl.constexpr, INDEXED: tl.constexpr, FOURD: tl.constexpr = False,
              SELECT: tl.constexpr = False, MASKED: tl.constexpr = False):
    start_m = tl.program_id(0)
    y = tl.program_id(1) * N  # first row of this (batch, head) in the [B*H*N, D] view
    if DEVICE_DESC:
        q_desc = tl.make_tensor_descriptor(Q, shape=[ROWS, HEAD_DIM], strides=[HEAD_DIM, 1],
                                           block_shape=[BLOCK_M, HEAD_DIM])
        k_desc = tl.make_tensor_descriptor(K, shape=[ROWS, HEAD_DIM], strides=[HEAD_DIM, 1],
                                           block_shape=[BLOCK_N, HEAD_DIM])
        v_desc = tl.make_tensor_descriptor(V, shape=[ROWS, HEAD_DIM], strides=[HEAD_DIM, 1],
                                           block_shape=[BLOCK_N, HEAD_DIM])
    bh = tl.program_id(1)
    if FOURD:  # [B*H, N, D] descriptors, as patternc's [B, H, N, D] ones
        q = q_desc.load([bh, start_m * BLOCK_M, 0]).reshape(BLOCK_M, HEAD_DIM)
    else:
        q = q_desc.load([y + start_m * BLOCK_M, 0])
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    lo = tl.load(OFFSETS + start_m)
    hi = tl.load(OFFSETS + start_m + 1)
    for t in tl.range(lo, hi, warp_specialize=WS):
        full = t < hi - 1  # SELECT / MASKED: the row's last tile stands for a partial one
        if SELECT:
            start_n = tl.where(full, tl.load(INDICES + t, mask=full, other=0),
                               tl.load(INDICES + t, mask=not full, other=0)) * BLOCK_N
        elif INDEXED:
            start_n = tl.load(INDICES + t) * BLOCK_N
        else:
            start_n = (t - lo) * BLOCK_N
        if FOURD:
            k = k_desc.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM).T
        else:
            k = k_desc.load([y + start_n, 0]).T
        qk = tl.dot(q, k)
        if MASKED:
            offs_n = start_n + tl.arange(0, BLOCK_N)
            keep = full | (offs_n[None, :] <= start_m * BLOCK_M + tl.arange(0, BLOCK_M)[:, None] + N)
            qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        if FOURD:
            v = v_desc.load([bh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        else:
            v = v_desc.load([y + start_n, 0])
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, HEAD_DIM)
    rows = (y + offs_m).to(tl.int64)
    tl.store(O + rows[:, None] * HEAD_DIM + d[None, :], (acc / l_i[:, None]).to(O.dtype.element_ty))


VARIANTS = {  # name: (DEVICE_DESC, WS, INDEXED)
    "host": (False, False, True),
    "host-ws": (False, True, True),
    "device": (True, False, True),
    "device-ws": (True, True, True),
    "device-seq": (True, False, False),
    "device-ws-seq": (True, True, False),
}
TILES = [(64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3), (128, 128, 4, 2), (128, 128, 4, 3)]


def table(n, block_m, block_n, device):
    """CSR table of a dense layout: every query block lists every key block."""
    blocks_m, blocks_n = n // block_m, n // block_n
    offsets = torch.arange(blocks_m + 1, dtype=torch.int32, device=device) * blocks_n
    indices = torch.arange(blocks_n, dtype=torch.int32, device=device).repeat(blocks_m)
    return offsets, indices


def launch(q, k, v, o, variant, tile):
    device_desc, ws, indexed = VARIANTS[variant]
    block_m, block_n, warps, stages = tile
    B, H, N, D = q.shape
    views = [x.view(B * H * N, D) for x in (q, k, v)]
    descs = ([None] * 3 if device_desc else
             [TensorDescriptor.from_tensor(x, [bs, D]) for x, bs in zip(views, (block_m, block_n, block_n))])
    offsets, indices = table(N, block_m, block_n, q.device)
    grid = (N // block_m, B * H)
    return lambda: probe_fwd[grid](*views, o, *descs, offsets, indices, D ** -0.5 * 1.4426950408889634, B * H * N,
                                   N=N, HEAD_DIM=D, BLOCK_M=block_m, BLOCK_N=block_n, DEVICE_DESC=device_desc,
                                   WS=ws, INDEXED=indexed, num_warps=warps, num_stages=stages)


def offline():
    """Compile every variant for sm_90 here and print registers and shared memory."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", 90, 32)
    for variant, tile in itertools.product(VARIANTS, TILES):
        device_desc, ws, indexed = VARIANTS[variant]
        block_m, block_n, warps, stages = tile
        sig = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "O": "*bf16",
               "q_desc": "constexpr" if device_desc else f"tensordesc<bf16[{block_m},128]>",
               "k_desc": "constexpr" if device_desc else f"tensordesc<bf16[{block_n},128]>",
               "v_desc": "constexpr" if device_desc else f"tensordesc<bf16[{block_n},128]>",
               "OFFSETS": "*i32", "INDICES": "*i32", "qk_scale": "fp32", "ROWS": "i32",
               "N": "constexpr", "HEAD_DIM": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr",
               "DEVICE_DESC": "constexpr", "WS": "constexpr", "INDEXED": "constexpr"}
        consts = {"N": 16384, "HEAD_DIM": 128, "BLOCK_M": block_m, "BLOCK_N": block_n, "DEVICE_DESC": device_desc,
                  "WS": ws, "INDEXED": indexed}
        if device_desc:
            consts.update(q_desc=None, k_desc=None, v_desc=None)
        names = list(sig)
        src = ASTSource(probe_fwd, sig, {(names.index(k),): v for k, v in consts.items()})
        try:
            kernel = triton.compile(src, target=target, options={"num_warps": warps, "num_stages": stages})
            ws_note = "partitioned" if "ttg.warp_specialize" in kernel.asm["ttgir"] else "one partition"
            print(f"{variant:14s} {tile}: {cubin_resources(kernel)} shared {kernel.metadata.shared} {ws_note}")
        except Exception as e:  # a variant Triton cannot compile is a result too
            print(f"{variant:14s} {tile}: failed: {str(e).splitlines()[0][:150]}")


def isolate(n: int, feature: str):
    """One warp-specialized 128x128 launch, synchronized (run it under `timeout`: a hang and an
    error look alike otherwise): host descriptors with one of patternc's kernel features
    (plain: none, fourd, select, masked), or ``device``: descriptors made in the kernel."""
    B, H, D = 1, 2, 128
    q, k, v = (torch.randn(B, H, n, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    o = torch.full_like(q, float("nan"))
    fourd, device = feature == "fourd", feature == "device"
    views = [x.view(B * H, n, D) if fourd else x.view(B * H * n, D) for x in (q, k, v)]
    descs = [None if device else TensorDescriptor.from_tensor(x, [1, 128, D] if fourd else [128, D]) for x in views]
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    offsets, indices = table(n, 128, 128, q.device)
    probe_fwd[(n // 128, B * H)](*views, o, *descs, offsets, indices, D ** -0.5 * 1.4426950408889634, B * H * n,
                                 N=n, HEAD_DIM=D, BLOCK_M=128, BLOCK_N=128, DEVICE_DESC=device, WS=True, INDEXED=True,
                                 FOURD=fourd, SELECT=feature == "select", MASKED=feature == "masked",
                                 num_warps=4, num_stages=2)
    torch.cuda.synchronize()
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    print(feature, "ok", ((o.float() - ref.float()).norm() / ref.float().norm()).item())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--offline", action="store_true")
    ap.add_argument("--isolate", default="", help="fourd, select, masked or plain: one launch (see isolate)")
    args = ap.parse_args()
    if args.isolate:
        return isolate(args.n, args.isolate)
    if args.offline:
        return offline()
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    B, H, N, D = 2, 16, args.n, 128
    q, k, v = (torch.randn(B, H, N, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * B * H * N * N * D
    from torch.nn.attention import SDPBackend, sdpa_kernel
    ref = None
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}; "
          f"B={B} H={H} N={N} D={D} bf16, dense, not causal")
    for name, backend in (("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION), ("sdpa-flash", SDPBackend.FLASH_ATTENTION)):
        with sdpa_kernel(backend):
            fn = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
            out = fn()
            ref = out if ref is None else ref
            ms = triton.testing.do_bench(fn, warmup=100, rep=500)
        print(f"| {name:14s} | | {ms:.3f} ms | {flops / ms / 1e9:.0f} TF/s |")
    for variant, tile in itertools.product([v for v in VARIANTS if v != "host-ws"], TILES):  # host-ws hangs
        o = torch.full_like(q, float("nan"))
        try:
            fn = launch(q, k, v, o, variant, tile)
            fn()
            err = ((o.float() - ref.float()).norm() / ref.float().norm()).item()
            ms = triton.testing.do_bench(fn, warmup=100, rep=500)
            print(f"| {variant:14s} | {tile} | {ms:.3f} ms | {flops / ms / 1e9:.0f} TF/s | rel err {err:.1e} |")
        except Exception as e:
            print(f"| {variant:14s} | {tile} | failed: {str(e).splitlines()[0][:150]} |")


if __name__ == "__main__":
    main()
