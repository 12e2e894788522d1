"""GPU golden tests (``pytest -m gpu -s`` on a CUDA machine): bf16 / fp16 / fp32, 1K to 16K
tokens, head dims 64 / 128 / 256 (and 80 / 96 / 192), every example pattern, forward and all gradients, with
the kernels' default tile configurations. Each passing case prints its errors (``-s``)."""

import os

import pytest
import torch

import patternc
from helpers import EXAMPLES, EXAMPLES_DIR, dense_attention, rel_err, run_case
from patternc.plan import plan_for

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def assert_like_dense(pattern, q, k, v, out, grads, d_out, label=""):
    """O, dQ, dK, dV of a call (default scale) against the float64 dense reference of ``pattern``."""
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    mask = patternc.parse(pattern).dense_mask(q.shape[2], k.shape[2], device="cuda")
    ref, _ = dense_attention(*leaves, mask, q.shape[3] ** -0.5)
    ref_grads = torch.autograd.grad(ref, leaves, d_out.double())
    for name, got, want in zip(("O", "dQ", "dK", "dV"), (out, *grads), (ref, *ref_grads)):
        assert rel_err(got, want) < 1e-2, f"{name} {label}"


@pytest.fixture(autouse=True)
def _own_kernels(monkeypatch):
    """Calls run their plans' own kernels from the first one on: a new structure's first calls
    would otherwise run the plan's interim kernels while its warp-specialized ones compile
    (`launch._compiling`; tested on its own below)."""
    from patternc.ops import launch

    monkeypatch.setattr(launch, "INTERIM", False)


def misaligned(t):
    """A copy of ``t`` 2 bytes past 16-byte alignment (no TMA descriptor can address it)."""
    out = torch.empty(t.numel() + 8, device=t.device, dtype=t.dtype)[1:1 + t.numel()].view(t.shape).copy_(t)
    assert out.data_ptr() % 16
    return out


def _example(name):
    return patternc.load(os.path.join(EXAMPLES_DIR, name))


@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_1k(example, dtype, d):
    run_case(_example(example), lq=1024, d=d, dtype=DTYPES[dtype], block=None)


@pytest.mark.parametrize("n", [4096, 16384])
@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_long_bf16(example, n):
    run_case(_example(example), lq=n, d=128, hq=1, dtype=torch.bfloat16, block=None)


@pytest.mark.parametrize("pattern,n,d,hq,hkv,dtype,tile", [("causal", 16384, 128, 1, 1, "bf16", (4, 1, 1)),
                                                           ("all", 8192, 128, 2, 1, "bf16", (4, 1, 1)),
                                                           ("all", 8192, 96, 2, 1, "fp16", (8, 0, 2))])
def test_dense_layouts_with_128x128_forward_tiles(pattern, n, d, hq, hkv, dtype, tile):
    """Long rows take 128x128 forward tiles: warp-specialized (4 warps, `plan.long_rows`) at D=128,
    else 8 warps (`plan.is_dense`), packed GQA included."""
    plan = plan_for(patternc.parse(pattern), n, n, None, torch.device("cuda"), DTYPES[dtype], d, {},
                    hq // hkv)
    assert (plan.fwd.block_m, plan.fwd.block_n) == (128, 128)
    assert (plan.fwd.num_warps, plan.fwd.warp_specialize, plan.pack) == tile
    run_case(pattern, lq=n, d=d, hq=hq, hkv=hkv, dtype=DTYPES[dtype], block=None)


WARP_SPECIALIZED = dict(fwd_warp_specialize=1, bwd_warp_specialize=0)  # hopper.py's forward, the plain backward
FUSED = dict(fwd_warp_specialize=1, bwd_warp_specialize=1)  # and hopper.py's fused backward


def _recorded(monkeypatch, keep=lambda name: True) -> list:
    """The names of the kernels the launches run (those ``keep`` passes), in order, one per launch."""
    from patternc.ops import launch

    ran, real = [], launch._launch
    monkeypatch.setattr(launch, "_launch", lambda kernel, *a: (
        ran.append(kernel.__name__) if keep(kernel.__name__) else None, real(kernel, *a))[-1])
    return ran


@pytest.fixture
def gluon_calls(monkeypatch):
    """The names of hopper.py's kernels the launches ran, in order, one per launch."""
    return _recorded(monkeypatch, lambda name: name.endswith("_ws"))


@pytest.fixture
def launched(monkeypatch):
    """The names of every kernel the launches ran, in order, one per launch."""
    return _recorded(monkeypatch)


@pytest.mark.parametrize("pattern,lq,lk,hq,hkv,dtype,q_offset", [
    ("causal", 4096, 4096, 2, 2, "bf16", None),
    ("all", 2000, 3000, 2, 2, "fp16", None),  # ragged key tiles (not EVEN_N), Lq != Lk
    ("window(left=1023, right=0)", 4096, 4096, 2, 1, "bf16", None),  # GQA
    ("causal", 3000, 1000, 2, 2, "bf16", None),  # rows that attend nothing
    ("causal", 256, 4096, 2, 2, "bf16", 3840),  # a query offset
    ("(global(0:4) + window(left=255, right=0)) & causal", 3000, 3000, 4, 2, "bf16", None),  # tagged tiles
    ("global(0:40) + window(3) + random(2, block=64)", 2000, 1500, 2, 2, "fp16", 100),  # a union with a random term
])
@pytest.mark.parametrize("options", [WARP_SPECIALIZED, FUSED], ids=["forward", "forward+backward"])
def test_warp_specialized_kernels(gluon_calls, pattern, lq, lk, hq, hkv, dtype, q_offset, options):
    """hopper.py's Gluon forward (option fwd_warp_specialize): producer warp, two consumer
    warpgroups; and its fused backward (bwd_warp_specialize): 128-key programs, dQ by TMA
    reductions (GQA: the group's heads in one program; tagged tiles; odd lengths)."""
    run_case(pattern, lq=lq, lk=lk, hq=hq, hkv=hkv, d=128, dtype=DTYPES[dtype], block=None, q_offset=q_offset,
             options=options)
    assert gluon_calls == (["attn_fwd_ws", "attn_bwd_ws"] if options is FUSED else ["attn_fwd_ws"])


def test_warp_specialized_kernels_batched_strided(gluon_calls):
    """Two batches and [B, L, H, D] tensors: the descriptors' batch coordinate, O's, dK's and dV's
    strides and the LSE rows of each (batch, head)."""
    run_case("causal", lq=1000, lk=1500, b=2, hq=4, hkv=2, d=128, dtype=torch.bfloat16, block=None,
             layout="blhd", options=FUSED)
    assert gluon_calls == ["attn_fwd_ws", "attn_bwd_ws"]


@pytest.mark.parametrize("pairs", [1, 3])
def test_fused_backward_in_chunks_of_heads(monkeypatch, gluon_calls, pairs):
    """The fused backward's launches over chunks of (batch, kv head) pairs, each into the reused
    fp32 accumulator: 2 batches x 2 kv heads (GQA) in chunks of 1, and of 3 then 1."""
    from patternc.ops import launch

    monkeypatch.setattr(launch, "FUSED_PAIRS", pairs)
    run_case("causal", lq=1500, lk=1500, b=2, hq=4, hkv=2, d=128, dtype=torch.bfloat16, block=None, options=FUSED)
    assert gluon_calls == ["attn_fwd_ws"] + ["attn_bwd_ws"] * -(-4 // pairs)  # a launch per chunk


def test_fused_backward_plan_without_tma_takes_the_plain_kernels(monkeypatch, gluon_calls):
    """TMA off (as tests may set it): the plain kernels on the fused backward's 64x128 tile, 8 warps."""
    from patternc.ops import launch

    monkeypatch.setattr(launch, "TMA", False)
    run_case("causal", lq=1000, lk=1200, hq=4, hkv=2, d=128, dtype=torch.bfloat16, block=None, options=FUSED)
    assert not gluon_calls


def test_fused_backward_copies_what_the_tma_cannot_address(gluon_calls):
    """The gradient of a sum (a stride-0 dO) and a q 2 bytes past 16-byte alignment: copied for the
    fused backward's descriptors (the forward takes its plain loops for that q)."""
    q, k, v = (torch.randn(1, 2, 2048, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    shifted = misaligned(q)
    leaves = [shifted.requires_grad_(), k.requires_grad_(), v.requires_grad_()]
    attn = patternc.attention_from("window(left=700, right=0)", **FUSED)
    out = attn(*leaves)
    grads = torch.autograd.grad(out.sum(), leaves)
    assert gluon_calls == ["attn_bwd_ws"]
    assert_like_dense("window(left=700, right=0)", shifted, k, v, out, grads, torch.ones_like(out))


def test_plan_fuses_the_backward_where_the_forward_is_warp_specialized():
    """The plan's choice on an sm_90 GPU with Triton 3.6, and what options change."""
    from patternc.kernels.cache import hopper_supported

    if torch.cuda.get_device_capability()[0] != 9 or not hopper_supported():
        pytest.skip("the warp-specialized kernels are chosen on sm_90 with Triton 3.6 only")
    causal = patternc.parse("causal")
    plan = plan_for(causal, 16384, 16384, None, torch.device("cuda"), torch.bfloat16, 128, {}, 1)
    assert plan.fwd.warp_specialize and plan.bwd.warp_specialize and (plan.bwd.block_m, plan.bwd.block_n) == (64, 128)
    for options in (dict(bwd_warp_specialize=0), dict(num_warps=4)):
        plan = plan_for(causal, 16384, 16384, None, torch.device("cuda"), torch.bfloat16, 128, options, 1)
        assert not plan.bwd.warp_specialize
    torch.use_deterministic_algorithms(True)
    try:  # the plain backward, whose sums run in a fixed order
        plan = plan_for(causal, 16384, 16384, None, torch.device("cuda"), torch.bfloat16, 128, {}, 1)
        assert plan.fwd.warp_specialize and not plan.bwd.warp_specialize
    finally:
        torch.use_deterministic_algorithms(False)
    window = patternc.parse("window(left=1023, right=0)")  # uniform rows, not long ones: the plain backward
    plan = plan_for(window, 16384, 16384, None, torch.device("cuda"), torch.bfloat16, 128, {}, 1)
    assert plan.fwd.warp_specialize and not plan.bwd.warp_specialize


def test_warp_specialized_option_with_unaligned_tensors_takes_the_plain_loops(gluon_calls):
    """A q the TMA cannot address (its base 2 bytes past 16-byte alignment): the plain loops on the
    same 128x128 layout, 8 warps."""
    q, k, v = (torch.randn(1, 2, 2048, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    shifted = misaligned(q)
    leaves = [shifted.requires_grad_(), k.requires_grad_(), v.requires_grad_()]  # no copies: they would be aligned
    out = patternc.attention_from("causal", **WARP_SPECIALIZED)(*leaves)
    d_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, leaves, d_out)
    assert not gluon_calls
    assert_like_dense("causal", shifted, k, v, out, grads, d_out)


@pytest.mark.parametrize("splits,programs", [(3, None), (4, 5)])
def test_warp_specialized_forward_split_rows(monkeypatch, gluon_calls, splits, programs):
    """Its rows split over several items (decoding), one item per program or persistent programs
    walking several (fp32 parts, merged through the LSE); some splits get no tile."""
    from patternc.ops import launch

    monkeypatch.setattr(launch, "SPLITS", splits)
    monkeypatch.setattr(launch, "PERSISTENT", programs)
    options = dict(WARP_SPECIALIZED, fwd_persistent=int(programs is not None))
    run_case("causal", lq=200, lk=3000, hq=4, hkv=2, d=128, dtype=torch.bfloat16, block=None, options=options)
    run_case("window(left=300, right=0)", lq=1000, lk=1000, hq=2, hkv=2, d=128, dtype=torch.float16, block=None,
             options=options)
    assert set(gluon_calls) == {"attn_fwd_ws"}


@pytest.mark.parametrize("pattern,lq,lk,hq,hkv,dtype,q_offset", [
    ("window(left=1023, right=0)", 4096, 4096, 4, 2, "bf16", None),  # GQA
    ("window(left=1023, right=0)", 3000, 3000, 2, 2, "fp16", None),  # ragged key tiles
    ("all", 2000, 3000, 2, 2, "bf16", None),  # Lq != Lk
    ("window(511)", 2048, 4096, 2, 2, "bf16", 2048),  # a query offset
])
def test_persistent_warp_specialized_forward(monkeypatch, gluon_calls, pattern, lq, lk, hq, hkv, dtype, q_offset):
    """Persistent programs looping over query blocks, warp-specialized: 7 programs here, so each
    walks many items (one per multiprocessor would give these small calls one item each); no
    split rows here (test_warp_specialized_forward_split_rows has them)."""
    plan = plan_for(patternc.parse("window(left=1023, right=0)"), 16384, 16384, None, torch.device("cuda"),
                    torch.bfloat16, 128, {}, 1)
    assert plan.fwd.persistent and plan.fwd.warp_specialize  # the plan's choice there
    from patternc.ops import launch

    monkeypatch.setattr(launch, "PERSISTENT", 7)
    monkeypatch.setattr(launch, "SPLITS", 1)
    run_case(pattern, lq=lq, lk=lk, hq=hq, hkv=hkv, d=128, dtype=DTYPES[dtype], block=None, q_offset=q_offset,
             options=dict(WARP_SPECIALIZED, fwd_persistent=1))
    assert set(gluon_calls) == {"attn_fwd_ws"}


@pytest.mark.parametrize("lq,lk,hq,hkv", [(1000, 3000, 4, 2), (3000, 1000, 4, 1), (2047, 2047, 2, 2)])
def test_unequal_lengths_and_gqa(lq, lk, hq, hkv):
    run_case("global(first, eos) + window(3) + random(2)", lq=lq, lk=lk, hq=hq, hkv=hkv, d=64,
             dtype=torch.bfloat16, block=None)
    run_case("(global(0:4) + window(left=255, right=0)) & causal", lq=lq, lk=lk, hq=hq, hkv=hkv, d=128,
             dtype=torch.float16, block=None)


def test_token_level_random_and_fully_masked_rows():
    run_case("random(2, block=1, seed=3) + window(1)", lq=2048, d=64, dtype=torch.bfloat16, block=None)
    run_case("causal", lq=3000, lk=1000, d=64, dtype=torch.float16, block=None)


@pytest.mark.parametrize("d", [80, 96, 192])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_head_dims_not_powers_of_two(d, dtype):
    run_case("global(first, eos) + window(3) + random(2)", lq=1024, lk=1500, hq=4, hkv=2, d=d,
             dtype=DTYPES[dtype], block=None)


def test_more_than_65535_batch_heads():
    """B x H = 70000 programs per query block: beyond a second grid axis' limit."""
    run_case("window(left=7, right=0) + global(first)", lq=40, d=16, b=7, hq=10000, hkv=5000,
             dtype=torch.float16, block=None)


def test_offsets_beyond_int32():
    """[B, L, H, D] storage with L * H * D > 2**31: row offsets need 64-bit pointer math."""
    L, H, D, w = 131072 + 64, 128, 128, 64
    pattern = f"window(left={w - 1}, right=0)"
    q, k, v = (torch.randn(1, L, H, D, device="cuda", dtype=torch.bfloat16).transpose(1, 2).requires_grad_()
               for _ in range(3))
    assert L * H * D > 2**31
    out = patternc.attention_from(pattern)(q, k, v)
    d_out = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), d_out)
    # The last 512 queries of the last head only see the last 512 + 63 keys: check them densely.
    s, h = L - 512, H - 1
    qs, ks, vs = (t[:, h:, lo:].detach().double().requires_grad_() for t, lo in ((q, s), (k, s - w + 1), (v, s - w + 1)))
    mask = patternc.parse(pattern).dense_mask(qs.shape[2], ks.shape[2], device="cuda")
    ref, _ = dense_attention(qs, ks, vs, mask, D ** -0.5)
    rdq, rdk, rdv = torch.autograd.grad(ref, (qs, ks, vs), d_out[:, h:, s:].double())
    assert rel_err(out[:, h:, s:], ref) < 1e-2 and rel_err(dq[:, h:, s:], rdq) < 1e-2
    assert rel_err(dk[:, h:, s:], rdk[:, :, w - 1:]) < 1e-2 and rel_err(dv[:, h:, s:], rdv[:, :, w - 1:]) < 1e-2
    print(f"ok  int64 offsets: L={L} H={H} D={D}, last 512 rows of the last head match")


@pytest.mark.parametrize("lq,q_offset", [(1, None), (16, None), (256, 1000)])
def test_decode_steps_and_query_offsets(lq, q_offset):
    """KV-cache decoding (default offset: the last queries meet the last keys) and an explicit
    offset (a sequence-parallel shard), GQA, bf16."""
    run_case("global(first, eos) + window(3) + random(2)", lq=lq, lk=4096, hq=8, hkv=2, d=128,
             dtype=torch.bfloat16, block=None, q_offset=q_offset)


def test_relaunch_skips_triton_binding_and_matches(monkeypatch):
    """After a call geometry's first launch, `launch._launch` hands prepared arguments straight
    to the compiled kernel. Later calls must compute what the first did: fresh inputs (new
    addresses), a [B, L, H, D] layout (new strides: a new geometry), a view 2 bytes off 16-byte
    alignment (a geometry of its own, loaded through pointers), then the first layout again."""
    from patternc import plan
    from patternc.ops import launch

    plan._plan.cache_clear()  # fresh plans: no prepared launches
    pattern = "global(first, eos) + window(3) + random(2)"
    attn = patternc.attention_from(pattern)
    flash = launch.cache.kernels(False)
    binds = []
    for name in ("attn_fwd", "attn_bwd_preprocess", "attn_bwd_dkdv", "attn_bwd_dq"):
        kernel = getattr(flash, name)

        def run(*args, _run=kernel.run, _name=name, **kwargs):
            if not kwargs["warmup"]:  # a launch (warmups only compile: `launch._compile`)
                binds.append(_name)
            return _run(*args, **kwargs)
        monkeypatch.setattr(kernel, "run", run)

    def inputs(layout):
        shape = (2, 1000, 4, 64) if layout == "blhd" else (2, 4, 1000, 64)
        offset = 1 if layout == "unaligned" else 0
        xs = []
        for _ in range(3):
            x = torch.randn(torch.Size(shape).numel() + offset, device="cuda", dtype=torch.bfloat16)[offset:].view(shape)
            xs.append((x.transpose(1, 2) if layout == "blhd" else x).requires_grad_())
        return xs

    layouts = ["bhld", "bhld", "bhld", "blhd", "blhd", "unaligned", "unaligned", "bhld"]
    for layout in layouts:
        q, k, v = inputs(layout)
        out = attn(q, k, v)
        d_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, (q, k, v), d_out)
        assert_like_dense(pattern, q, k, v, out, grads, d_out, f"after relaunch, layout {layout}")
    assert len(binds) == 4 * len(set(layouts)), binds  # Triton bound each kernel once per geometry
    prepared = [p for p in plan.plan_for(attn.pattern, 1000, 1000, None, q.device, q.dtype, 64).launches.values()
                if isinstance(p, launch.Prepared)]
    assert prepared and all(p.c_launch is not None for p in prepared)  # relaunched through Triton's C function
    print(f"ok  relaunch: {len(layouts)} calls, {len(binds)} Triton launches")


def test_backward_kernels_compile_in_children_during_the_forward(monkeypatch, tmp_path):
    """A never-seen structure's first forward with gradients forks children that compile the
    backward's three kernels into Triton's cache (`patternc.kernels.parallel`) while the parent
    compiles the forward; the backward then loads them and its gradients are right."""
    from patternc.kernels import parallel

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    forks = []
    fork = parallel.os.fork
    monkeypatch.setattr(parallel.os, "fork", lambda: forks.append(1) or fork())
    pattern = "(global(first) + window(left=5, right=2) + random(1, block=64)) & causal"
    q, k, v = (torch.randn(1, 2, 700, 40, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(3))
    out = patternc.attention_from(pattern)(q, k, v)  # head dim 40: no kernel of this process has it
    assert len(forks) == 3, forks
    parallel.wait()
    cubins = {p.name.split(".")[0] for p in tmp_path.rglob("*.cubin")}
    assert {"attn_bwd_preprocess", "attn_bwd_dkdv", "attn_bwd_dq"} <= cubins, cubins  # before the backward ran
    launchers = list(tmp_path.rglob("__triton_launcher*"))
    assert len(launchers) >= 4, launchers  # the forward's, built here, and the backward's three, by the children
    d_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), d_out)
    assert len(forks) == 3, forks  # the backward forked nothing more: it found them compiled
    assert_like_dense(pattern, q, k, v, out, grads, d_out)
    print(f"ok  parallel compile: {sorted(cubins)}")


def test_first_calls_run_the_interim_kernels_while_the_plans_own_compile(monkeypatch, tmp_path, launched):
    """A never-seen structure whose plan has warp-specialized kernels (2.5-4.7 s to compile): its
    first forward runs the plan's interim plain kernels (~1 s to compile) while children compile the
    plan's own, and once those are done the calls run them. Every call matches the dense
    reference, forward and gradients."""
    from patternc.kernels import parallel
    from patternc.ops import launch

    monkeypatch.setattr(launch, "INTERIM", True)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    pattern = "(causal + global(0:2)) & window(left=4095, right=0)"  # a structure no other test has
    plan = plan_for(patternc.parse(pattern), 4096, 4096, None, torch.device("cuda"), torch.bfloat16, 128, {})
    assert plan.fwd.warp_specialize and plan.bwd.warp_specialize, plan
    assert not plan.interim.fwd.warp_specialize and not plan.interim.bwd.warp_specialize, plan.interim
    attn = patternc.attention_from(pattern)
    for call in range(2):
        q, k, v = (torch.randn(1, 2, 4096, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        out = attn(q, k, v)
        d_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, (q, k, v), d_out)
        assert_like_dense(pattern, q, k, v, out, grads, d_out, f"call {call}")
        if call == 0:
            assert launched[0] == "attn_fwd", launched  # the interim forward
            first = list(launched)
            parallel.wait()
            launched.clear()
    # the plan's own kernels (split rows add attn_merge)
    assert {"attn_fwd_ws", "attn_bwd_ws"} <= set(launched) and "attn_fwd" not in launched, launched
    print(f"ok  interim kernels: first call {first}, then {launched}")


def test_a_cuda_graph_captured_while_the_plans_kernels_compile_waits_for_them(monkeypatch, tmp_path, launched):
    """A call inside a CUDA graph's capture (torch.cuda.graph: global capture mode) right after a
    first call that ran the interim kernels: the capture waits for the plan's own kernels and
    records them (a graph keeps what it captured), and its replays are right."""
    from patternc.ops import launch

    monkeypatch.setattr(launch, "INTERIM", True)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    pattern = "(causal + global(0:2, 7:9)) & window(left=4095, right=0)"  # a structure no other test has
    attn = patternc.attention_from(pattern)
    q, k, v = (torch.randn(1, 2, 4096, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the warm-up torch's CUDA graph docs ask for
        attn(q, k, v)
    torch.cuda.current_stream().wait_stream(side)
    assert launched[0] == "attn_fwd", launched  # the interim forward
    launched.clear()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = attn(q, k, v)
    assert "attn_fwd_ws" in launched and "attn_fwd" not in launched, launched
    for replay in range(2):
        q.copy_(torch.randn_like(q))
        ref, _ = dense_attention(q, k, v, patternc.parse(pattern).dense_mask(4096, 4096, device="cuda"), 128 ** -0.5)
        out.fill_(float("nan"))
        graph.replay()
        assert rel_err(out, ref) < 1e-2, replay
    print(f"ok  capture after an interim call: {launched}")


def test_precompiled_kernels_leave_nothing_to_compile(monkeypatch, tmp_path):
    """`patternc.precompile` (and `patternc compile --build`) put every kernel of a call and its
    backward into Triton's cache: the first call of that structure then compiles nothing (no
    new file in the cache, no child forked) and computes the right thing. Head dim 48 and a
    structure no other test compiles."""
    from patternc.cli import main
    from patternc.kernels import parallel

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    pattern = "(global(0:3) + window(left=9, right=0)) & causal"
    assert main(["compile", "-e", pattern, "-n", "600", "--head-dim", "48", "--dtype", "float16", "--heads", "4",
                 "--kv-heads", "2", "--build"]) == 0
    patternc.precompile(pattern, (1, 4, 700, 48), (1, 2, 700, 48), dtype=torch.float16)  # another length
    files = set(tmp_path.rglob("*"))
    assert any(p.name.startswith("attn_bwd_dkdv") for p in files), sorted(p.name for p in files)
    forks = []
    fork = parallel.os.fork
    monkeypatch.setattr(parallel.os, "fork", lambda: forks.append(1) or fork())
    q = torch.randn(1, 4, 700, 48, device="cuda", dtype=torch.float16, requires_grad=True)
    k, v = (torch.randn(1, 2, 700, 48, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(2))
    out = patternc.attention_from(pattern)(q, k, v)
    d_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), d_out)
    assert not forks and set(tmp_path.rglob("*")) == files, sorted(p.name for p in set(tmp_path.rglob("*")) - files)
    assert_like_dense(pattern, q, k, v, out, grads, d_out)
    print(f"ok  precompile: {len(files)} cache files, none added by the first call")


def test_new_lengths_of_a_seen_structure_compile_nothing():
    """The query offset and the count of heavy blocks are plain int32 kernel arguments: Triton
    would otherwise compile a variant per value equal to 1 or divisible by 16. After the first
    call, other lengths of the structure in the same classes (not divisible by 16 nor by the
    tile; heavy blocks: none at 520 tokens, some at 4040) compile no kernel, forward or
    backward."""
    from patternc.ops import launch

    flash = launch.cache.kernels(False)
    kernels = (flash.attn_fwd, flash.attn_bwd_dkdv, flash.attn_bwd_dq)

    def variants():
        return [sum(len(cache[0]) for cache in kernel.device_caches.values()) for kernel in kernels]

    pattern = "(global(0:4) + window(left=511, right=0)) & causal"
    attn = patternc.attention_from(pattern)
    before = None
    for n in (520, 4040, 3000):  # n % 16 == 8 for all: one variant of Q_LEN, KV_LEN, EVEN_N
        q, k, v = (torch.randn(1, 2, n, 64, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(3))
        out = attn(q, k, v)
        d_out = torch.randn_like(out)
        grads = torch.autograd.grad(out, (q, k, v), d_out)
        before = before or variants()
        assert variants() == before, (n, before, variants())
        assert_like_dense(pattern, q, k, v, out, grads, d_out, f"at {n} tokens")
    print(f"ok  lengths 520, 4040, 3000: kernel variants {before}, unchanged")


def test_backward_on_a_side_stream_orders_with_the_callers_stream():
    """The backward runs dQ on a second stream beside dK/dV (`launch.OVERLAP_DQ`). On a caller's
    own stream the gradients must be complete when backward returns: a few queries against
    many keys make dQ (a few long programs) finish far behind dK/dV, so a clone of dQ queued
    on the caller's stream reads it half-written unless that stream waits for the side one;
    the inputs are freed right after and their memory reused at once."""
    from patternc.ops import launch

    assert launch.OVERLAP_DQ
    stream = torch.cuda.Stream()
    assert launch.side_stream(stream).cuda_stream != stream.cuda_stream  # else this test checks nothing
    for pattern, lq, lk in (("global(0:64) + window(101) + random(2, block=64)", 3000, 3000), ("all", 64, 16384)):
        attn = patternc.attention_from(pattern)
        with torch.cuda.stream(stream):
            for _ in range(3):
                q = torch.randn(1, 16, lq, 64, device="cuda", dtype=torch.float16, requires_grad=True)
                k, v = (torch.randn(1, 16, lk, 64, device="cuda", dtype=torch.float16, requires_grad=True)
                        for _ in range(2))
                d_out = torch.randn(q.shape, device="cuda", dtype=torch.float16)
                dq, dk, dv = (g.clone() for g in torch.autograd.grad(attn(q, k, v), (q, k, v), d_out))
                torch.randn(4, 16, lk, 64, device="cuda", dtype=torch.float16)  # reuses the freed blocks
                stream.synchronize()
                with torch.no_grad():
                    out = attn(q, k, v)
                assert_like_dense(pattern, q, k, v, out, (dq, dk, dv), d_out, f"on a side stream, {lq}x{lk}")
    print("ok  dQ beside dK/dV on a caller's stream")


def test_cuda_graphs_build_plans_outside_their_pool_and_keep_them():
    """`torch.compile(mode="reduce-overhead")` whose first call of a shape builds the plan (in
    the CUDA graph's warm-up: torch raised "tensor(s) in the cudagraph pool not tracked as
    outputs" when the plan's tables were allocated there), then replays after the plan cache
    dropped every plan (the graph holds the tables' addresses: `launch.CAPTURED` keeps them)."""
    from patternc import plan
    from patternc.ops import launch

    pattern = "global(0:3) + window(left=21, right=0) + random(1, block=64)"
    attn = patternc.attention_from(pattern)
    graphed = torch.compile(attn, mode="reduce-overhead", fullgraph=True)
    q, k, v = (torch.randn(1, 4, 777, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    plan._plan.cache_clear()
    outs = [graphed(q, k, v).clone() for _ in range(3)]  # warm-up, record, replay
    assert launch.CAPTURED
    plan._plan.cache_clear()
    torch.cuda.empty_cache()
    torch.randn(1 << 24, device="cuda")  # reuse what the cache dropped, were it freed
    outs.append(graphed(q, k, v).clone())
    ref, _ = dense_attention(q, k, v, patternc.parse(pattern).dense_mask(777, 777, device="cuda"), 64 ** -0.5)
    for i, out in enumerate(outs):
        assert rel_err(out, ref) < 1e-2, i
    print(f"ok  cuda graphs: {len(outs)} calls, {len(launch.CAPTURED)} plan(s) kept for captured graphs")


def test_warp_specialized_forward_in_cuda_graphs():
    """The warp-specialized forward (hopper.py; causal, D=128, long rows) captured in a CUDA graph:
    replays stay right after other allocations reuse freed memory."""
    plan = plan_for(patternc.parse("causal"), 4096, 4096, None, torch.device("cuda"), torch.bfloat16, 128, {})
    assert plan.fwd.warp_specialize
    graphed = torch.compile(patternc.attention_from("causal"), mode="reduce-overhead", fullgraph=True)
    q, k, v = (torch.randn(1, 2, 4096, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    outs = [graphed(q, k, v).clone() for _ in range(3)]  # warm-up, record, replay
    torch.cuda.empty_cache()
    torch.randn(1 << 24, device="cuda")
    outs.append(graphed(q, k, v).clone())
    ref, _ = dense_attention(q, k, v, patternc.parse("causal").dense_mask(4096, 4096, device="cuda"), 128 ** -0.5)
    for i, out in enumerate(outs):
        assert rel_err(out, ref) < 1e-2, i
    print(f"ok  warp-specialized forward in cuda graphs: {len(outs)} calls")


def test_fused_backward_in_cuda_graphs():
    """The fused backward (hopper.py; causal, D=128, long rows) in `torch.compile(mode=
    "reduce-overhead")`, whose backward graph cudagraph trees capture too: gradients of each
    call (warm-up, record, replays) match the dense reference."""
    plan = plan_for(patternc.parse("causal"), 4096, 4096, None, torch.device("cuda"), torch.bfloat16, 128, {})
    assert plan.bwd.warp_specialize
    graphed = torch.compile(patternc.attention_from("causal"), mode="reduce-overhead", fullgraph=True)
    for i in range(4):
        q, k, v = (torch.randn(1, 2, 4096, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        d_out = torch.randn(q.shape, device="cuda", dtype=torch.bfloat16)
        out = graphed(q, k, v)
        grads = [g.clone() for g in torch.autograd.grad(out, (q, k, v), d_out)]
        assert_like_dense("causal", q, k, v, out.clone(), grads, d_out, f"call {i}")
    print("ok  fused backward in cuda graphs: 4 calls")
