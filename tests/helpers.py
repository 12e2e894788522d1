"""Shared test helpers (no test module imports another): independent references, the golden
kernel comparison `run_case`, pattern lists and hypothesis strategies.

The references share no code with patternc: `brute_mask` reads the language spec element by
element in pure Python (only the checked tree's node types are used), `dense_attention` is
float64 masked softmax written out.
"""

from __future__ import annotations

import math
import os
import random

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import patternc
from patternc import pattern as pt

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}
EXAMPLES_DIR = os.path.join(os.path.dirname(__file__), "..", "examples")
EXAMPLES = sorted(p for p in os.listdir(EXAMPLES_DIR) if p.endswith(".attn"))


# ----------------------------------------------------------------- references
M64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def random_choice(seed: int, qb: int, n: int, r: int) -> set[int]:
    """Floyd's algorithm, as documented in docs/language.md."""
    k = min(r, n)
    key = splitmix64(splitmix64(seed) ^ qb)
    chosen: set[int] = set()
    for t in range(k):
        m = n - k + t
        x = ((splitmix64(key ^ t) >> 32) * (m + 1)) >> 32
        chosen.add(m if x in chosen else x)
    return chosen


def global_set(node: pt.Global, lk: int) -> set[int]:
    g: set[int] = set()
    for s in node.selectors:
        if isinstance(s, pt.Index):
            k = s.value + lk if s.value < 0 else s.value
            if not 0 <= k < lk:
                raise IndexError(k)
            g.add(k)
        else:
            g.update(range(lk)[s.start : s.stop])
    return g


def attends(node, i: int, j: int, lq: int, lk: int, memo: dict) -> bool:
    p = i + (lk - lq)  # position (bottom-right aligned)
    if isinstance(node, pt.Global):
        g = memo.setdefault(("g", node), global_set(node, lk))
        return j in g or p in g
    if isinstance(node, pt.Window):
        return p - node.left <= j <= p + node.right
    if isinstance(node, pt.Causal):
        return j <= p
    if isinstance(node, pt.All):
        return True
    if isinstance(node, pt.Random):
        b = node.block
        key = ("r", node, p // b)  # rows are position blocks
        if key not in memo:
            memo[key] = random_choice(node.seed, p // b, -(-lk // b), node.count)
        return j // b in memo[key]
    if isinstance(node, pt.Union):
        return any(attends(t, i, j, lq, lk, memo) for t in node.terms)
    if isinstance(node, pt.Intersect):
        return all(attends(t, i, j, lq, lk, memo) for t in node.terms)
    raise TypeError(node)


def brute_mask(pattern, lq: int, lk: int) -> torch.Tensor:
    """Raises IndexError if a global index is out of range for ``lk``."""
    memo: dict = {}
    for node in pt.walk(pattern.root):  # resolve every global set up front
        if isinstance(node, pt.Global):
            memo[("g", node)] = global_set(node, lk)
    rows = [[attends(pattern.root, i, j, lq, lk, memo) for j in range(lk)] for i in range(lq)]
    return torch.tensor(rows, dtype=torch.bool).view(lq, lk)


def block_classes(mask: torch.Tensor, bm: int, bn: int) -> torch.Tensor:
    """int8 [nq, nk] block classification of a dense mask: 0 empty, 1 partial, 2 full."""
    lq, lk = mask.shape
    nq, nk = -(-lq // bm), -(-lk // bn)
    out = torch.zeros(nq, nk, dtype=torch.int8)
    for a in range(nq):
        for b in range(nk):
            tile = mask[a * bm : (a + 1) * bm, b * bn : (b + 1) * bn]
            out[a, b] = 2 if bool(tile.all()) else 1 if bool(tile.any()) else 0
    return out


def dense_attention(q, k, v, mask, scale):
    """q [B, H, Lq, D], k/v [B, Hkv, Lk, D], mask [Lq, Lk] bool → (out, natural-log lse), float64."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    s = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    row_max = torch.where(mask, s, -math.inf).amax(-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, 0.0).detach()
    e = torch.where(mask, torch.exp(torch.where(mask, s - row_max, 0.0)), 0.0)
    total = e.sum(-1, keepdim=True)
    attended = total > 0
    p = e / torch.where(attended, total, 1.0)
    out = torch.einsum("bhij,bhjd->bhid", p, v)
    lse = torch.where(attended, row_max + torch.log(torch.where(attended, total, 1.0)), -math.inf)
    return out, lse.squeeze(-1)


def rel_err(got, ref):
    """Relative error norm ||got - ref|| / ||ref|| in float64 (0 when both are 0; NaN fails)."""
    got, ref = got.double(), ref.double()
    if not torch.isfinite(got).all():
        return math.inf
    denom = ref.norm().item()
    diff = (got - ref).norm().item()
    return diff / denom if denom > 0 else diff


# -------------------------------------------------------------------- patterns
PATTERNS = [
    "global(first, eos) + window(3) + random(2)",
    "(global(0:4) + window(left=1023, right=0)) & causal",
    "global(first, -1) + window(255) + random(3, block=128, seed=7)",
    "window(1)",
    "window(5) & random(3, block=4)",
    "random(2, block=1, seed=3)",
    "random(5, block=3) + random(2, block=7, seed=1)",
    "causal & window(left=7, right=0) + global(3:9)",
    "all & (window(1) + global(-3:))",
    "window(left=0, right=4) & causal",
    "(window(left=5, right=0) + window(left=0, right=5)) & (causal + global(2))",
    "global(:) & window(left=2, right=0)",
    "global(-2:, :1, 4:2) + causal",
    "all",
    "causal",
]


# ----------------------------------------------------------------------- CLI
def run_cli(capsys, *argv):
    """patternc's main(argv) → (exit status, stdout, stderr); argparse's SystemExit becomes a
    status, and no output may hold a traceback."""
    from patternc.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# ------------------------------------------------------------ golden kernels
def run_case(pattern, *, lq, lk=None, d=32, b=1, hq=2, hkv=None, dtype=torch.float32, block=(16, 16),
             use_lse_grad=True, layout="bhld", q_offset=None, magnitude=1.0, options=None):
    """Forward + backward through attention_from and the float64 reference; assert closeness.
    ``magnitude`` scales q and k (logits grow with its square: 100 gives logits of +-1e4, where
    gradients are ill-conditioned in any precision, so only the forward pass is compared and
    the gradients must be finite)."""
    lk = lq if lk is None else lk
    hkv = hq if hkv is None else hkv
    seed = random.randrange(2**31)
    gen = torch.Generator().manual_seed(seed)
    p = patternc.parse(pattern) if isinstance(pattern, str) else pattern

    def make(h, n, magnitude=1.0):
        x = torch.randn(b, h, n, d, generator=gen, dtype=torch.float32) * magnitude
        if layout == "blhd":  # non-contiguous: stored [B, L, H, D], viewed as [B, H, L, D]
            x = x.transpose(1, 2).contiguous().transpose(1, 2)
        return x.to(DEVICE, dtype).requires_grad_()

    q, k, v = make(hq, lq, magnitude), make(hkv, lk, magnitude), make(hkv, lk)
    scale = random.choice([None, 0.3])
    attn = patternc.attention_from(p, backend="kernels", **(dict(block_m=block[0], block_n=block[1]) if block else {}),
                                   **(options or {}))
    out, lse = attn(q, k, v, scale=scale, return_lse=True, q_offset=q_offset)
    d_out = torch.randn(out.shape, generator=gen).to(DEVICE, dtype)
    d_lse = torch.randn(lse.shape, generator=gen).to(DEVICE) if use_lse_grad else None
    grads = torch.autograd.grad((out, lse) if use_lse_grad else (out,), (q, k, v),
                                (d_out, d_lse) if use_lse_grad else (d_out,))

    mask = p.dense_mask(lq, lk, device=DEVICE, q_offset=q_offset)
    leaves = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref_out, ref_lse = dense_attention(*leaves, mask, d ** -0.5 if scale is None else scale)
    ref_grads = torch.autograd.grad((ref_out, ref_lse) if use_lse_grad else (ref_out,), leaves,
                                    (d_out.double(), d_lse.double()) if use_lse_grad else (d_out.double(),))
    tol = TOL[dtype]
    where = (f"{p} lq={lq} lk={lk} q_offset={q_offset} d={d} b={b} hq={hq} hkv={hkv} {dtype} blocks={block} "
             f"{options or ''} "
             f"magnitude={magnitude} seed={seed}")
    assert out.dtype == dtype and out.shape == q.shape and lse.dtype == torch.float32
    compared = [("O", out, ref_out), ("dQ", grads[0], ref_grads[0]), ("dK", grads[1], ref_grads[1]),
                ("dV", grads[2], ref_grads[2])]
    if magnitude != 1.0:  # near one-hot softmax: dS is a difference of nearly equal terms in any precision
        assert all(torch.isfinite(g).all() for g in grads), f"non-finite gradients for {where}"
        compared = compared[:1]
    for name, got, ref in compared:
        err = rel_err(got, ref)
        assert err <= tol, f"{name} relative error {err:.2e} > {tol:.0e} for {where}"
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), f"LSE -inf pattern differs for {where}"
    assert rel_err(lse[finite], ref_lse[finite]) <= tol, f"LSE for {where}"
    print(f"ok  {where}  " + "  ".join(f"{n}={rel_err(g, r):.1e}" for n, g, r in
          [("O", out, ref_out), ("dQ", grads[0], ref_grads[0]), ("dK", grads[1], ref_grads[1]), ("dV", grads[2], ref_grads[2])]))
    return out, lse, grads


# ------------------------------------------------------- hypothesis strategies
LQ, LK = 7, 6  # global integer selectors are drawn from [-LK, LK) so they are in range
NAMES = ["local", "g", "_x1", "sparse_2", "Causal", "windows", "eos_"]
SETTINGS = settings(max_examples=100, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _ints(lo, hi):
    return st.integers(lo, hi)


@st.composite
def selectors(draw):
    kind = draw(st.sampled_from(["int", "word", "slice"]))
    if kind == "int":
        k = draw(_ints(-LK, LK - 1))
        return str(k), pt.Index(k)
    if kind == "word":
        word = draw(st.sampled_from(["first", "last", "eos"]))
        return word, pt.Index(0 if word == "first" else -1)
    a, b = draw(st.none() | _ints(-9, 9)), draw(st.none() | _ints(-9, 9))
    return f"{'' if a is None else a}:{'' if b is None else b}", pt.Range(a, b)


def _call(draw, name, positional, keywords):
    """name(args) with optional trailing comma and random spacing."""
    keywords = draw(st.permutations(keywords))
    parts = [str(v) for v in positional] + [f"{k}={v}" for k, v in keywords]
    sep = draw(st.sampled_from([", ", ",", " , ", ",\n  "]))
    trailing = "," if parts and draw(st.booleans()) else ""
    return f"{name}({sep.join(parts)}{trailing})"


@st.composite
def components(draw):
    kind = draw(st.sampled_from(["global", "window", "window_lr", "random", "causal", "all"]))
    if kind == "global":
        sels = draw(st.lists(selectors(), min_size=1, max_size=3))
        text = _call(draw, "global", [t for t, _ in sels], [])
        return text, pt.Global(tuple(dict.fromkeys(s for _, s in sels)))
    if kind == "window":
        w = 2 * draw(_ints(0, 4)) + 1
        text = _call(draw, "window", [w], []) if draw(st.booleans()) else _call(draw, "window", [], [("w", w)])
        return text, pt.Window(w // 2, w // 2)
    if kind == "window_lr":
        kw = draw(st.dictionaries(st.sampled_from(["left", "right"]), _ints(0, 5), min_size=1))
        return _call(draw, "window", [], list(kw.items())), pt.Window(kw.get("left", 0), kw.get("right", 0))
    if kind == "random":
        r, block, seed = draw(_ints(1, 4)), draw(_ints(1, 8)), draw(_ints(0, 100))
        values = {"r": r, "block": block, "seed": seed}
        npos = draw(_ints(1, 3))  # r, block, seed: a positional prefix, then keywords
        keys = [k for k in ("block", "seed")[max(npos - 1, 0):] if draw(st.booleans())]
        text = _call(draw, "random", [values[k] for k in ("r", "block", "seed")[:npos]], [(k, values[k]) for k in keys])
        default = {"block": 64, "seed": 0}
        given_ = set(("r", "block", "seed")[:npos]) | set(keys)
        return text, pt.Random(r, block if "block" in given_ else default["block"],
                               seed if "seed" in given_ else default["seed"])
    text = draw(st.sampled_from([kind, f"{kind}()"]))
    return text, pt.Causal() if kind == "causal" else pt.All()


OPS = {"+": [" + ", "+", " +\n  ", "\n  + ", " + # note\n"], "&": [" & ", "&", " &\n ", "\n& "]}


def expressions(defined):
    """(text, expected node, level): level 0 is a union, 1 an intersection, 2 an atom."""
    leaves = components().map(lambda c: (c[0], c[1], 2))
    if defined:
        leaves = leaves | st.sampled_from(sorted(defined.items())).map(lambda kv: (kv[0], kv[1], 2))

    def extend(children):
        @st.composite
        def binary(draw):
            op = draw(st.sampled_from("+&"))
            (ta, na, la), (tb, nb, lb) = draw(children), draw(children)
            if op == "&":  # operands of '&' must be atoms or intersections
                ta, tb = (f"({t})" if lvl == 0 else t for t, lvl in ((ta, la), (tb, lb)))
            text = f"{ta}{draw(st.sampled_from(OPS[op]))}{tb}"
            if op == "+":
                return text, pt.union(na, nb), 0
            return text, pt.intersect(na, nb), 1

        parens = children.map(lambda c: (f"({c[0]})", c[1], 2))
        return binary() | parens

    return st.recursive(leaves, extend, max_leaves=6)


@st.composite
def programs(draw):
    """A valid program: some definitions (each may use earlier ones), then an expression."""
    defined, statements = {}, []
    for name in draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True)):
        text, node, _ = draw(expressions(defined))
        statements.append(f"{name} = {text}")
        defined[name] = node
    text, node, _ = draw(expressions(defined))
    statements.append(text)
    sep = draw(st.sampled_from(["\n", "; ", ";\n", "\n\n# comment\n", " ;; \r\n"]))
    return draw(st.sampled_from(["", "# head\n", "\n"])) + sep.join(statements) + draw(st.sampled_from(["", "\n", " # end"])), node


