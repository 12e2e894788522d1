"""Golden tests of the generated kernels against independent float64 dense attention.

On a machine without CUDA these run the very same generated Triton kernels in the Triton
interpreter (``backend="kernels"``). Inputs are fresh random tensors on every run; the seed
is in every failure message. Kernel outputs and gradients are allocated NaN-filled
(conftest.py), so an element the kernels never write fails the comparison.
"""

import os
import random

import pytest
import torch

import patternc
from helpers import DEVICE, EXAMPLES, EXAMPLES_DIR, TOL, dense_attention, rel_err, run_case
from patternc.kernels import cache, emit
from patternc.ops import launch
from patternc.reference import chunked_attention
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_pattern(example, dtype):
    pattern = patternc.load(os.path.join(EXAMPLES_DIR, example))
    run_case(pattern, lq=130, dtype=dtype, block=(32, 32))


LECTURE_SMALL = "global(first, eos) + window(3) + random(2, block=8)"


@pytest.mark.parametrize("lq,lk", [(1, 1), (17, 17), (77, 77), (130, 130), (17, 130), (130, 17), (77, 45)])
def test_odd_and_unequal_lengths(lq, lk):
    run_case(LECTURE_SMALL if lk >= 2 else "global(first) + window(3)", lq=lq, lk=lk)


# The examples' structures at CPU scale (the real files target 4K-16K tokens, where the GPU
# suite runs them; at a few hundred tokens their windows would cover everything).
SCALED_EXAMPLES = {
    "attention_sink": "(global(0:4) + window(left=27, right=0)) & causal",
    "bigbird": "global(0:16, -16:) + window(47) + random(3, block=16, seed=0)",
    "lecture": "global(first, eos) + window(3) + random(2, block=16)",
    "longformer": "global(0:8) + window(33)",
    "sliding_window": "window(left=63, right=0)",
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("example", sorted(SCALED_EXAMPLES))
def test_example_structures_at_cpu_scale(example, dtype):
    run_case(SCALED_EXAMPLES[example], lq=200, dtype=dtype, block=(32, 32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("d", [16, 32, 48, 64, 80])
def test_head_dims(d, dtype):
    run_case("(global(0:3) + window(left=20, right=0)) & causal", lq=77, d=d, dtype=dtype)


@pytest.mark.parametrize("hq,hkv", [(4, 2), (6, 1), (3, 3)])
def test_grouped_query_attention(hq, hkv):
    run_case(LECTURE_SMALL, lq=45, lk=70, hq=hq, hkv=hkv, b=2)


def test_fully_masked_rows_give_zero_output_and_no_nan():
    # Lq > Lk with causal: the first 40 queries precede every key.
    out, lse, grads = run_case("causal", lq=60, lk=20)
    assert (out[:, :, :40] == 0).all() and torch.isneginf(lse[:, :, :40]).all()
    assert (grads[0][:, :, :40] == 0).all()
    # only rows 3 and 4 attend anything
    out, lse, grads = run_case("global(3:5) & window(1)", lq=33, d=16)
    assert torch.isneginf(lse[:, :, [0, 1, 2, 5, 30]]).all() and torch.isfinite(lse[:, :, 3:5]).all()
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    "pattern,block",
    [
        ("random(2, block=1, seed=5)", (16, 16)),  # token-level random: partial tiles only
        ("random(2, block=16) + window(1)", (16, 16)),  # aligned random blocks are full tiles
        ("random(3, block=5) & causal", (16, 32)),
        ("all", (32, 16)),
        ("window(left=0, right=6) + global(-1)", (32, 32)),
    ],
)
def test_random_and_tile_shapes(pattern, block):
    run_case(pattern, lq=77, lk=70, block=block)


def test_non_contiguous_inputs_and_no_lse_gradient():
    run_case(LECTURE_SMALL, lq=50, layout="blhd", use_lse_grad=False)


def test_64_bit_row_offsets_path(monkeypatch):
    """The dK/dV kernel's 64-bit row path (taken on the GPU for > 2**31-element offsets)."""
    monkeypatch.setattr(launch, "WIDE_ROW_OFFSETS", 0)
    run_case(LECTURE_SMALL, lq=50, lk=40, layout="blhd")


@pytest.mark.parametrize("d, dtype", [(32, torch.float32), (24, torch.float16), (40, torch.float32)])
def test_tensor_descriptor_path(monkeypatch, d, dtype):
    """K/V (forward, dQ) and Q/dO (dK/dV) tiles through TMA descriptors, as Hopper GPUs run them;
    the interpreter emulates the descriptors, zero padding past the rows and the head dim included."""
    monkeypatch.setattr(launch, "TMA", True)
    run_case(LECTURE_SMALL, lq=45, lk=70, d=d, dtype=dtype, hq=4, hkv=2)
    run_case("(global(0:3) + window(left=20, right=0)) & causal", lq=50, lk=37, d=d, dtype=dtype, layout="blhd")


def test_warp_specialized_option_takes_the_plain_loops_in_the_interpreter(monkeypatch):
    """fwd_warp_specialize asks for hopper.py's Gluon forward, which only compiles for a GPU: in the
    interpreter the forward runs its plain loops, with the option's tile (here 32x32)."""
    monkeypatch.setattr(launch, "TMA", True)
    options = dict(fwd_block_m=32, fwd_block_n=32, fwd_warp_specialize=1)
    run_case("window(left=20, right=3)", lq=45, lk=70, hq=4, hkv=2, block=None, options=options)
    run_case("causal", lq=40, lk=40, d=20, dtype=torch.float16, block=None, options=options)


@pytest.mark.parametrize("pattern,n", [("causal", 4096), ("causal", 4000), ("window(left=1023, right=0)", 4096),
                                       ("all", 4096), ("random(2, block=128)", 4096), ("global(0:128)", 4096),
                                       ("(global(0:4) + window(left=255, right=0)) & causal", 4000)])
def test_hopper_kernels_compile_for_sm90(tmp_path, pattern, n):
    """hopper.py's warp-specialized forward and fused backward, with each component's generated
    mask and a union's, through the plan and launch descriptions of a real call, compile for an
    H100 here (no GPU: benchmarks/compile_stages.py --offline, in a process of its own, as Triton
    compiles there and not in this one's interpreter mode); n=4000: keys past the last full tile
    (not EVEN_N); the union with 2 query heads per K/V head (the backward's GQA loop). Their
    results are checked on the GPU (test_gpu.py)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TMPDIR"] = str(tmp_path)  # the script's fresh cache directories
    script = os.path.join(os.path.dirname(EXAMPLES_DIR), "benchmarks", "compile_stages.py")
    run = subprocess.run([sys.executable, script, "--offline", "--pattern", pattern, "--n", str(n),
                          "--kv-heads", "8" if "&" in pattern else "16",
                          "--options", "fwd_warp_specialize=1,bwd_warp_specialize=1"], capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "attn_fwd_ws" in run.stdout and "attn_bwd_ws" in run.stdout and "warp-specialized" in run.stdout, run.stdout


@pytest.mark.parametrize("hq, hkv, block", [(4, 2, (32, 32)), (8, 2, (64, 32))])
def test_grouped_heads_share_one_forward_program(hq, hkv, block):
    """GQA: a forward program packs the query block of every head of a group into one tile (rows
    interleaved by head) when block_m // group >= 16."""
    plan = patternc.plan.plan_for(patternc.parse(LECTURE_SMALL), 45, 70, None, torch.device(DEVICE), torch.float32,
                                  32, dict(block_m=block[0], block_n=block[1]), hq // hkv)
    assert plan.pack == hq // hkv and plan.fwd_layout.block_m == block[0] // plan.pack
    run_case(LECTURE_SMALL, lq=45, lk=70, hq=hq, hkv=hkv, b=2, block=block)
    run_case("causal", lq=3, lk=100, hq=hq, hkv=hkv, block=block)  # decoding rows


@pytest.mark.parametrize("splits", [2, 5])
def test_split_rows_merge_through_the_lse(monkeypatch, splits):
    """Decoding splits each forward row's key tiles over several programs (some get none) and
    merges their outputs through the log-sum-exp: same output, LSE and gradients."""
    monkeypatch.setattr(launch, "SPLITS", splits)
    run_case(LECTURE_SMALL, lq=3, lk=150, hq=4, hkv=1)
    run_case("global(3:5) & window(1)", lq=33, d=16)  # rows that attend nothing in every split
    run_case("causal", lq=16, lk=200, q_offset=100)
    run_case(LECTURE_SMALL, lq=2, lk=130, hq=4, hkv=2, block=(32, 32))  # packed GQA and split rows


@pytest.mark.parametrize("splits", [1, 3])
def test_heavy_blocks_scheduled_first(monkeypatch, splits):
    """Programs take heavy blocks first (`plan.Schedule`); with the threshold at the mean, about
    half the blocks of each kernel count as heavy, in every kernel, with split rows and GQA."""
    from patternc import plan

    monkeypatch.setattr(plan, "HEAVY", 1.0)
    monkeypatch.setattr(launch, "SPLITS", splits)
    plan._plan.cache_clear()
    try:
        run_case(LECTURE_SMALL, lq=200, lk=230, hq=4, hkv=2)
        run_case("global(0:20) + window(5)", lq=150, d=16, block=(32, 16))
        used = plan.plan_for(patternc.parse(LECTURE_SMALL), 200, 230, None, torch.device("cpu"), torch.float32, 32,
                             {"block_m": 16, "block_n": 16}, 2)
        assert all(0 < s.heavy < s.order.numel() for s in (used.fwd_schedule, used.dq_schedule, used.dkdv_schedule))
    finally:
        plan._plan.cache_clear()  # no plan built with this threshold outlives the test


# ------------------------------------------------------------------ property sweep
SWEEP_N = int(os.environ.get("PATTERNC_SWEEP_N", "12"))  # cases; PATTERNC_SWEEP_N=2000 on a GPU
SWEEP_SEED = int(os.environ.get("PATTERNC_SWEEP_SEED", random.randrange(2**31)))
GPU = DEVICE == "cuda"


def random_pattern(rng, depth=3):
    """A random tree over every component (global selectors that fit any length)."""
    if depth == 0 or rng.random() < 0.3:
        kind = rng.choice(["global", "window", "window2", "random", "causal", "all"])
        if kind == "global":
            return f"global({', '.join(rng.sample(['first', 'eos', '0:3', '-4:', ':2', '1:-1', '5:9'], rng.randint(1, 2)))})"
        if kind == "window":
            return f"window({rng.choice([1, 3, 9, 31, 129])})"
        if kind == "window2":
            return f"window(left={rng.randrange(0, 60)}, right={rng.randrange(0, 60)})"
        if kind == "random":
            return f"random({rng.randrange(1, 4)}, block={rng.choice([1, 4, 16, 20, 64])}, seed={rng.randrange(100)})"
        return kind
    return f"({random_pattern(rng, depth - 1)} {rng.choice(['+', '&'])} {random_pattern(rng, depth - 1)})"


def sweep_case(rng):
    """A random pattern at a random shape: odd lengths, Lq != Lk both ways, query offsets that
    leave rows with no keys, GQA, B or H of 1, head dims that are not powers of two, and logits
    of +-1e4 (``magnitude`` 100). On a GPU: 10x longer, bf16 too, head dims to 256, default tiles."""
    pattern, q_offset = random_pattern(rng), None
    longest = 2000 if GPU else 100
    lq, lk = rng.randint(1, longest), rng.randint(1, longest)
    if rng.random() < 0.2:  # the first rows precede every key: no keys at all under `& causal`
        pattern, q_offset = f"({pattern}) & causal", -rng.randint(1, lq)
    elif rng.random() < 0.2:
        q_offset = rng.randint(-lq, lk)
    hq, hkv = rng.choice([(1, 1), (2, 1), (3, 3), (4, 2), (6, 3), (8, 1)])
    dtypes = [torch.float32, torch.float16] + ([torch.bfloat16] if GPU else [])
    return dict(pattern=pattern, lq=lq, lk=lk, q_offset=q_offset, hq=hq, hkv=hkv, b=rng.choice([1, 2]),
                d=rng.choice([8, 24, 40, 64, 80] + ([96, 128, 192, 256] if GPU else [])), dtype=rng.choice(dtypes),
                block=rng.choice([None, (16, 16), (32, 16), (16, 32), (32, 32)]) if not GPU else None,
                magnitude=100.0 if rng.random() < 0.1 else 1.0)


# logits of 1e4: the backward recomputes exp2 before masking; tl.where discards the masked infinities
@pytest.mark.filterwarnings("ignore:overflow encountered in exp2:RuntimeWarning")
def test_property_sweep():
    """Random patterns x random shapes through `attention_from(..., backend="kernels")` against
    float64 dense attention, forward and all gradients (`run_case`); SWEEP_N cases, a fresh seed
    each run (PATTERNC_SWEEP_SEED repeats one)."""
    rng = random.Random(SWEEP_SEED)
    for n in range(SWEEP_N):
        case = sweep_case(rng)
        try:
            run_case(**case)
        except AssertionError as exc:
            raise AssertionError(f"sweep case {n} of PATTERNC_SWEEP_SEED={SWEEP_SEED}: {case}\n{exc}") from None


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")  # the interpreter's numpy max
def test_nan_inputs_reach_only_the_rows_that_attend_them():
    """A NaN key poisons exactly the rows that attend it, a NaN query its own row (if it attends
    anything); every other row is exact, and rows that attend nothing stay 0."""
    rng = random.Random(SWEEP_SEED)
    for _ in range(max(2, SWEEP_N // 4)):
        case = sweep_case(rng)
        p = patternc.parse(case["pattern"])
        b, hq, hkv, lq, lk, d, dtype = (case[k] for k in ("b", "hq", "hkv", "lq", "lk", "d", "dtype"))
        q, k, v = (torch.randn(b, h, n, d).to(DEVICE, dtype) for h, n in ((hq, lq), (hkv, lk), (hkv, lk)))
        bad_query, bad_key = rng.randrange(lq), rng.randrange(lk)
        q[:, :, bad_query], k[:, :, bad_key] = float("nan"), float("nan")
        attn = patternc.attention_from(p, backend="kernels", **dict(zip(("block_m", "block_n"), case["block"] or ())))
        out, lse = attn(q, k, v, return_lse=True, q_offset=case["q_offset"])
        mask = p.dense_mask(lq, lk, device=DEVICE, q_offset=case["q_offset"])
        poisoned = mask[:, bad_key].clone()
        poisoned[bad_query] |= mask[bad_query].any()
        ref, _ = dense_attention(q, k, v, mask, d ** -0.5)
        where = f"{case} NaN query {bad_query}, NaN key {bad_key}"
        for got in (out, ref, lse.unsqueeze(-1)):
            assert torch.equal(got.isnan().any(-1), poisoned.expand(b, hq, lq)), where
        assert rel_err(out[:, :, ~poisoned], ref[:, :, ~poisoned]) <= TOL[dtype], where


def test_same_structure_shares_one_kernel_module():
    a, b = (emit.generate(patternc.parse(text).optimized) for text in ("window(129)", "window(257)"))
    c = emit.generate(patternc.parse("window(3) + global(first)").optimized)
    assert a == b and a.digest != c.digest
    assert "129" not in a.text and "257" not in a.text  # values live in PARAMS, not in the source
    mask = cache.mask_function(a, interpret=True)
    path = cache.cache_dir() / f"{a.module_name}.py"
    assert path.read_text() == a.text and mask.fn.__code__.co_filename == str(path)


def test_terms_partial_on_no_tile_are_left_out_of_the_mask():
    """A plan's mask module holds only the top-level terms partial on some tile of its layouts:
    at 32x32 tiles (the CPU's) `global(0:64)` and `random(2, block=64)` are full or empty on
    every tile, so the module is the window's alone and reads no TAGS; at 128x32 tiles the
    global rows and random blocks cut tiles and all three are back. Both compute the pattern,
    forward and gradients."""
    from patternc.plan import plan_for

    text = "global(0:64) + window(5) + random(2, block=64)"
    pattern = patternc.parse(text)
    plan = plan_for(pattern, 256, 256, None, torch.device(DEVICE), torch.float32, 32, {})
    assert (plan.fwd.block_m, plan.fwd.block_n, plan.bwd.block_m, plan.bwd.block_n) == (32, 32, 32, 32)
    assert not plan.source.tagged and plan.source.text.count("(left out)") == 2, plan.source.text
    assert plan.source.scalars == emit.generate(pattern.optimized).scalars  # PARAMS keep every term's slots
    cut = plan_for(pattern, 256, 256, None, torch.device(DEVICE), torch.float32, 32, dict(block_m=128, block_n=32))
    assert cut.source.tagged and "(left out)" not in cut.source.text, cut.source.text
    run_case(text, lq=256, d=32, block=None)
    run_case(text, lq=256, d=32, block=(128, 32))


def test_plans_are_cached_process_wide_and_bounded():
    """Modules hold no plans (they copy and pickle); one bounded LRU serves every module."""
    import copy
    import pickle

    from patternc import plan

    plan._plan.cache_clear()
    attn = patternc.attention_from("window(3)", backend="kernels", block_m=16, block_n=16)
    q = torch.randn(1, 1, 20, 16, device=DEVICE)
    attn(q, q, q)
    attn(q + 1, q, q)
    patternc.attention_from("window(3)", backend="kernels", block_m=16, block_n=16)(q, q, q)
    assert plan._plan.cache_info().currsize == 1
    attn(q[:, :, :10], q, q)
    assert plan._plan.cache_info().currsize == 2 and plan._plan.cache_info().maxsize == plan.PLAN_CACHE_SIZE
    clone = pickle.loads(pickle.dumps(copy.deepcopy(attn)))
    assert torch.equal(clone(q, q, q), attn(q, q, q))


def test_lse_gradients_of_any_layout():
    """Gradients arriving only through the LSE, as a broadcast (stride-0) tensor and as a
    transposed one: the kernels must not assume a packed dLSE."""
    attn = patternc.attention_from(LECTURE_SMALL, backend="kernels", block_m=16, block_n=16)
    q, k, v = (torch.randn(2, 3, 40, 16, device=DEVICE, requires_grad=True) for _ in range(3))
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    _, ref_lse = dense_attention(*leaves, patternc.parse(LECTURE_SMALL).dense_mask(40, 40, device=DEVICE), 0.25)
    weight = torch.randn(2, 40, 3, device=DEVICE)  # stored [B, L, H]: its transpose is strided
    for loss in (lambda lse: lse.sum(), lambda lse: (lse.transpose(1, 2) * weight).sum()):
        _, lse = attn(q, k, v, return_lse=True, scale=0.25)
        grads = torch.autograd.grad(loss(lse), (q, k, v))
        ref_dq, ref_dk = torch.autograd.grad(loss(ref_lse), leaves[:2], retain_graph=True)  # the LSE does not depend on V
        assert rel_err(grads[0], ref_dq) <= 1e-4 and rel_err(grads[1], ref_dk) <= 1e-4
        assert (grads[2] == 0).all()


def test_chunked_cpu_path_matches_dense(monkeypatch):
    """Plain CPU tensors without the interpreter take the chunked dense path."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    p = patternc.parse("global(first) + window(left=5, right=2) + random(1, block=4)")
    q = torch.randn(2, 4, 37, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 2, 29, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out, lse = chunked_attention(q, k, v, p.resolve(37, 29), 0.5, budget=2 * 4 * 29 * 5)  # 5 query rows per chunk
    ref_out, ref_lse = dense_attention(q, k, v, p.dense_mask(37, 29), 0.5)
    assert rel_err(out, ref_out) < 1e-12 and torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    d_out = torch.randn_like(out)
    for got, ref in zip(torch.autograd.grad(out, (q, k, v), d_out), torch.autograd.grad(ref_out, (q, k, v), d_out)):
        assert rel_err(got, ref) < 1e-12
    module_out = patternc.attention_from(p)(q.float(), k.float(), v.float(), scale=0.5)
    assert module_out.dtype == torch.float32 and rel_err(module_out, ref_out) < 1e-5


def test_reference_attention_is_dense_masked_attention():
    p = patternc.parse("(global(0:2) + window(5)) & causal")
    q, k, v = (torch.randn(1, 2, 23, 8, dtype=torch.float64) for _ in range(3))
    expected, _ = dense_attention(q, k, v, p.dense_mask(23, 23), 8 ** -0.5)
    assert rel_err(patternc.reference_attention(q, k, v, p), expected) < 1e-12
    assert rel_err(patternc.reference_attention(q, k, v, str(p), scale=0.1),
                   dense_attention(q, k, v, p.dense_mask(23, 23), 0.1)[0]) < 1e-12


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda t: (t[0], t[0], t[0][0]), "v must have 4 dimensions"),
        (lambda t: (t[0].half(), t[0], t[0]), "k has dtype torch.float32 but q has torch.float16"),
        (lambda t: (t[0].long(), t[0].long(), t[0].long()), "q has dtype int64; expected one of"),
        (lambda t: (t[0], t[1], t[1]), "q has 4 heads, which is not a multiple of k's 3 heads"),
        (lambda t: (t[0], t[0][..., :4], t[0][..., :4]), "k has head dim 4 but q has 8"),
        (lambda t: (t[0], t[0], t[0][:1]), "v must have the shape of k"),
        (lambda t: (t[2], t[2], t[2]), "head dim 300"),
    ],
)
def test_bad_inputs_name_the_argument(make, message):
    tensors = (torch.randn(2, 4, 5, 8, device=DEVICE), torch.randn(2, 3, 5, 8, device=DEVICE),
               torch.randn(1, 1, 5, 300, device=DEVICE))
    with pytest.raises(patternc.PatterncError, match=message.replace("(", r"\(")):
        patternc.attention_from("window(3)")(*make(tensors))


@pytest.mark.parametrize(
    "options,message",
    [({"block_m": 24}, "block_m must be a power of two >= 16"), ({"block_n": 8}, "block_n must be a power of two"),
     ({"num_warps": 0}, "num_warps must be a positive integer"), ({"tile": 64}, "unknown option 'tile'")],
)
def test_bad_options(options, message):
    with pytest.raises(patternc.PatterncError, match=message):
        patternc.attention_from("window(3)", **options)


def test_unwritable_cache_is_a_clear_error(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PATTERNC_CACHE_DIR", str(blocker / "sub"))
    src = emit.generate(patternc.parse("window(7) & global(first) & causal").optimized)
    with pytest.raises(patternc.PatterncError, match="cannot write the kernel cache"):
        cache.write(src)


def test_kernel_cache_is_safe_under_concurrent_processes(tmp_path):
    """Four processes generate and import the same new module into one empty cache at once."""
    import subprocess
    import sys

    text = "(window(3) + global(last)) & causal & all"
    script = ("import patternc; from patternc.kernels import cache, emit; "
              f"src = emit.generate(patternc.parse({text!r}).optimized); "
              "print(cache.mask_function(src, interpret=True).fn.__code__.co_filename)")
    env = dict(os.environ, PATTERNC_CACHE_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    (path,) = {out.strip() for out, _ in results}
    assert [f.name for f in tmp_path.iterdir()] == [os.path.basename(path)]  # no temp files left
    assert open(path).read() == emit.generate(patternc.parse(text).optimized).text


def test_prepared_launches_put_each_calls_tensors_in_place():
    """`launch._launch`'s bookkeeping (its GPU path is tested in test_gpu.py): the first launch of a
    geometry goes through Triton and keeps the argument list; later ones fill in only their own
    tensors, in the kernel's argument order, and do not rebuild the other arguments."""
    calls = []

    class Compiled:
        def __getitem__(self, grid):
            return lambda *values: calls.append(("fast", grid, values))

    class Kernel:  # what launch uses of a Triton JITFunction
        __name__ = "k"
        arg_names = ["A", "n", "B", "C"]

        def __getitem__(self, grid):
            return lambda **kwargs: calls.append(("triton", grid, kwargs)) or Compiled()

    class Plan:
        interpret = False
        launches = {}

    built = []

    def args():
        built.append(1)
        return dict(n=7, C="c")

    for a, b in (("a1", "b1"), ("a2", "b2")):
        launch._launch(Kernel(), 3, Plan, ("geometry",), dict(A=a, B=b), args)
    launch._launch(Kernel(), 3, Plan, ("other",), dict(A="a3", B="b3"), args)
    assert calls == [("triton", (3,), dict(A="a1", B="b1", n=7, C="c")), ("fast", (3, 1, 1), ("a2", 7, "b2", "c")),
                     ("triton", (3,), dict(A="a3", B="b3", n=7, C="c"))]
    # no reference to a call's tensors is kept (only the other arguments)
    assert len(built) == 2 and all("a1" not in p.values for p in Plan.launches.values())


def test_prepared_c_launch_fills_tensors_and_cached_descriptors_in_place(monkeypatch):
    """`Prepared`'s direct path (its GPU path is tested in test_gpu.py): the C launch function
    gets Triton's leading arguments, the fixed arguments with tensors as addresses, each call's
    tensors in place and each `Tma` expanded to its encoding, which is made once per address."""
    from types import SimpleNamespace

    from patternc.kernels import prepared

    launched, encoded = [], []

    def c_launch(*args):
        launched.append(args)

    inner = (lambda launcher: lambda *args: launcher(*args))(c_launch)  # Triton 3.6's descriptor wrapper
    runner = SimpleNamespace(launch=inner, global_scratch_size=0, global_scratch_align=1, profile_scratch_size=0,
                             num_ctas=1, launch_cooperative_grid=False, launch_pdl=False)
    compiled = SimpleNamespace(run=runner, function=1234, packed_metadata=(4, 1, 0),
                               src=SimpleNamespace(signature=dict(A="*bf16", T="*i32", D="tensordesc<bf16[64]>",
                                                                  n="i32", C="constexpr")),
                               metadata=SimpleNamespace(tensordesc_meta=[{"swizzle": 128}]))
    monkeypatch.setattr(prepared, "_known_triton", lambda: True)  # the launcher layout of Triton 3.6
    monkeypatch.setattr(prepared, "_is_c_function", lambda f: f is c_launch)
    monkeypatch.setattr(prepared, "_encode", lambda value, meta: encoded.append(value) or
                        [f"map@{value.tensor.data_ptr()}", 64, 1])
    monkeypatch.setattr(prepared.torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(prepared.torch._C, "_cuda_getCurrentRawStream", lambda device: 100 + device, raising=False)
    table = torch.arange(4, dtype=torch.int32)
    a1, a2, d1, d2 = (torch.empty(8) for _ in range(4))
    first = prepared.Prepared(compiled, ["a0", table, prepared.Tma(d1, (64,)), 7, None], slots=[0, 2])
    assert first.c_launch is c_launch and len(encoded) == 1  # the first launch's descriptor gave its width
    for a, d in ((a1, d1), (a2, d2), (a1, d1)):
        first(5, [a, prepared.Tma(d, (64,))])
    head = (5, 1, 1, 103, 1234, False, False, None, None, (4, 1, 0), None, None, None)
    assert [args[:13] for args in launched] == [head] * 3
    assert [args[13:] for args in launched] == [
        (a1, table.data_ptr(), f"map@{d1.data_ptr()}", 64, 1, 7, None),
        (a2, table.data_ptr(), f"map@{d2.data_ptr()}", 64, 1, 7, None),
        (a1, table.data_ptr(), f"map@{d1.data_ptr()}", 64, 1, 7, None)]
    assert [e.tensor for e in encoded] == [d1, d2]  # once per address (the first at preparation)
    assert "a0" not in first.values  # no reference to the first call's tensors
    # a kernel that makes descriptors itself: each launch gets its programs' global scratch
    monkeypatch.setattr(prepared, "_torch_buffer", lambda size, alignment, stream: f"scratch of {size} bytes")
    monkeypatch.setattr(runner, "global_scratch_size", 384)
    scratched = prepared.Prepared(compiled, ["a0", table, prepared.Tma(d1, (64,)), 7, None], slots=[0, 2])
    scratched(5, [a1, prepared.Tma(d1, (64,))])
    assert launched[-1][7:9] == ("scratch of 1920 bytes", None)  # global scratch, then profiling scratch
    monkeypatch.setattr(runner, "global_scratch_align", 1024)  # coarser than torch's blocks: Triton's runner
    assert prepared.Prepared(compiled, ["a0", table, prepared.Tma(d1, (64,)), 7, None], slots=[0, 2]).c_launch is None
    monkeypatch.undo()  # another Triton's launcher (3.7 on: another C interface) is never called directly
    import triton
    monkeypatch.setattr(triton, "__version__", "3.9.0")
    monkeypatch.setattr(prepared, "_is_c_function", lambda f: f is c_launch)
    assert prepared.Prepared(compiled, ["a0", table, prepared.Tma(d1, (64,)), 7, None], slots=[0, 2]).c_launch is None

    # hooks as Triton 3.6 takes them: empty chains, None, or plain functions
    from triton import knobs
    assert not prepared._hooked()
    monkeypatch.setattr(knobs.runtime, "launch_enter_hook", None)
    assert not prepared._hooked()
    monkeypatch.setattr(knobs.runtime, "launch_exit_hook", lambda metadata: None)
    assert prepared._hooked()

    # a launch hook (a profiler's) sends launches through Triton's runner, which calls it
    calls = []
    monkeypatch.setattr(prepared, "_hooked", lambda: True)

    class Runner:
        def __getitem__(self, grid):
            return lambda *values: calls.append((grid, values))
    first.compiled = Runner()
    monkeypatch.setattr(prepared, "descriptor", lambda t, block, gluon=False: ("desc", t, tuple(block)))
    first(5, [a2, prepared.Tma(d2, (64,))])
    assert calls == [((5, 1, 1), (a2, table, ("desc", d2, (64,)), 7, None))] and len(launched) == 4


def test_scratch_lends_torchs_allocator_for_one_launch_only():
    """Triton's runner allocates a kernel's global scratch (descriptors made in the kernel) with
    the allocator of the current context: `scratch` sets torch's in a copy of it, so an
    allocator set by the caller, or Triton's default, is what the caller sees afterwards."""
    from triton.runtime import _allocation

    from patternc.kernels import prepared

    before = _allocation._allocator.get()
    seen = prepared.scratch(lambda x: (_allocation._allocator.get(), x), 7)
    assert seen == (prepared._torch_buffer, 7) and _allocation._allocator.get() is before


@pytest.mark.parametrize("hq,hkv,lq", [(2, 2, 40), (4, 2, 40), (4, 1, 1)])
def test_launch_calls_give_each_kernel_exactly_its_arguments(monkeypatch, hq, hkv, lq):
    """The launch descriptions that `precompile` and the forward's early backward compile build
    from storage-free (meta) stand-ins give every kernel exactly its parameters, as the real
    calls do (those run here in Triton's interpreter; the stand-in ones compile only on a GPU)."""
    from patternc.plan import plan_for

    monkeypatch.setattr(launch, "SPLITS", 2 if lq == 1 else None)  # decoding: the split merge too
    q = torch.empty(1, hq, lq, 16, device="meta")
    k = v = torch.empty(1, hkv, 70, 16, device="meta")
    plan = plan_for(patternc.parse(LECTURE_SMALL), lq, 70, None, torch.device(DEVICE), torch.float32, 16, {},
                    hq // hkv)
    cache.prepare(interpret=True)
    calls = launch._forward_warmups(plan, q, k, v, 0.25, torch.device(DEVICE))
    calls += launch._backward_warmups(plan, q, k, v, 0.25)
    names = [kernel.fn.__name__ for kernel, *_ in calls]
    assert names == ["attn_fwd"] + ["attn_merge"] * (lq == 1) + ["attn_bwd_preprocess", "attn_bwd_dkdv", "attn_bwd_dq"]
    for kernel, programs, geometry, tensors, args in calls:
        given = {*tensors, *args()} - {"num_warps", "num_stages", "maxnreg"}
        assert given == set(kernel.arg_names), (kernel.fn.__name__, given ^ set(kernel.arg_names))
        assert programs > 0 and all(t is None or t.device.type == "meta" for t in tensors.values())
