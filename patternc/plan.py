"""`KernelPlan`: everything a launch needs, chosen once per (pattern, shapes, device, dtype).

The plan owns the choices: which tree the kernels run (the pattern's optimized tree), its
generated mask source, tile configurations for the forward and backward kernels, the
layouts at exactly those tiles (the layout's block is the kernel's tile), and the int32
PARAMS. Plans live in one bounded LRU cache shared by every module of a pattern (a model's
layers share them). A plan builds without Triton or a GPU (`patternc compile` reports from
`tiles_and_layout`); its tensors are internal and read-only. Its `launches` cache is filled by
`patternc.ops.launch` (compiled kernels and their prepared arguments per call geometry), so
it lives and dies with the plan.
"""

from __future__ import annotations

import concurrent.futures
import functools
from dataclasses import dataclass, field, replace
from typing import TypedDict

import torch

from .errors import PatterncError, require_int
from .kernels.cache import hopper_supported
from .kernels.emit import KernelSource, generate, params
from .layout import BlockLayout, build_layout
from .pattern import Pattern

INT32_LIMIT = 2**31
PLAN_CACHE_SIZE = 64
THREE_PROGRAMS = 168  # registers per thread that let three 4-warp programs share a multiprocessor (64K)
HEAVY = 4  # a block whose list is longer than HEAVY x the mean is scheduled first (`Schedule`)


class Options(TypedDict, total=False):
    """Tile options of `attention_from`: ``block_m``, ``block_n``, ``num_warps``, ``num_stages``,
    ``max_registers`` apply to both passes; ``fwd_``/``bwd_``-prefixed ones to one pass (and win).
    ``fwd_warp_specialize=1`` asks for the warp-specialized forward (Hopper, D=128; see
    `choose_tiles`), ``fwd_persistent=1`` for its persistent programs too, and
    ``bwd_warp_specialize=1`` for the warp-specialized fused backward (0: the plain kernels)."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    max_registers: int
    fwd_block_m: int
    fwd_block_n: int
    fwd_num_warps: int
    fwd_num_stages: int
    fwd_max_registers: int
    fwd_warp_specialize: int
    fwd_persistent: int
    bwd_block_m: int
    bwd_block_n: int
    bwd_num_warps: int
    bwd_num_stages: int
    bwd_max_registers: int
    bwd_warp_specialize: int


@dataclass(frozen=True)
class TileConfig:
    """A kernel's tile (also its layout's block) and launch settings."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2
    max_registers: int = 0  # per thread, a cap for the compiler (0: its choice); see `choose_tiles`
    warp_specialize: int = 0  # 1: hopper.py's Gluon kernels (producer warp, two consumer warpgroups)
    persistent: int = 0  # warp-specialized forward only, 1: one program per multiprocessor loops over the items

    @property
    def loop(self) -> str:
        """How the kernel's loop runs, in words ("" for the plain loops)."""
        if not self.warp_specialize:
            return ""
        return "persistent, warp-specialized" if self.persistent else "warp-specialized"


# hopper.py's Gluon kernel: 128-row query blocks (two consumer warpgroups of 64 rows), 128-key
# tiles in a ring of 2 K and 2 V buffers, a 4-warp default partition (the launch's num_warps)
WARP_SPECIALIZED = TileConfig(128, 128, 4, 2, warp_specialize=1)
# hopper.py's fused Gluon backward: 64-row query tiles against 128-key blocks (two consumer
# warpgroups of 64 keys each), Q and dO in rings of 2
BWD_WARP_SPECIALIZED = TileConfig(64, 128, 4, 2, warp_specialize=1)


def _caps_registers(name: str) -> bool:
    """The option is a register cap (``max_registers``, with or without a pass prefix)."""
    return name.endswith("max_registers")


def check_options(options: dict) -> Options:
    """Validate tile options (names and values); returns them unchanged."""
    for name, value in options.items():
        if name not in Options.__annotations__:
            raise PatterncError(f"unknown option {name!r} (expected one of {', '.join(Options.__annotations__)})")
        registers = _caps_registers(name)
        switch = name in ("fwd_warp_specialize", "fwd_persistent", "bwd_warp_specialize")
        require_int(f"option {name}", value, minimum=0 if registers or switch else 1)
        if switch and value > 1:
            raise PatterncError(f"option {name} must be 0 or 1, got {value}")
        if "block_" in name and (value < 16 or value & (value - 1)):
            raise PatterncError(f"option {name} must be a power of two >= 16, got {value}")
        if registers and value and not 24 <= value <= 255:
            raise PatterncError(f"option {name} must be 0 (the compiler's choice) or 24..255, got {value}")
    if options.get("fwd_persistent") and not options.get("fwd_warp_specialize"):
        raise PatterncError("option fwd_persistent=1 needs fwd_warp_specialize=1: only the warp-specialized forward "
                            "loops over several query blocks per program")
    return options


def choose_tiles(device_type: str, dtype: torch.dtype, head_dim: int, options: Options | None = None,
                 dense: bool = False, specialized: bool = False,
                 bwd_specialized: bool = False) -> tuple[TileConfig, TileConfig]:
    """(forward, backward) tiles for a device type, dtype and head dim, then the options.

    CUDA, fp16/bf16, D <= 128: the best of a sweep on an H100 (benchmarks/tune_tiles.py) with
    a 2-stage forward pipeline (A/B on an H200: forward up to 9% faster than 3 stages, never
    slower: results/2026-11-26-ab-fwd-stages2-h200.md, -ab-v8-stages-h200.md), and for
    ``dense`` layouts (`is_dense`) at D > 64 a 128x128, 8-warp, 2-stage forward (A/B on an
    H200, D=128: causal 6% and `all` 10% faster than 64x64, every sparser row and causal at
    D=64 slower: results/2026-11-26-ab-fwd128-h200.md, -ab-dense-h200.md, -ab-v8-stages-h200.md).
    At D <= 64 the 64x64, 4-warp forward's registers are capped at 168 per thread (unless the
    options change that tile or set a cap themselves), so three 4-warp programs fit a
    multiprocessor's 64K registers (its 42 KB of shared memory would allow five): the
    union patterns' forward needs ~175-180 and ran two per multiprocessor (A/B on an H100, P2
    at D=64 with GQA: forward -16..20%, no spills; patterns that need fewer registers compile
    as before; results/2026-11-26-ab-v10-max-registers-h100.md). Not at D=128 (P2's forward,
    215 registers, spills and slows down under the cap: +3%), nor for the backward (dK/dV
    needs ~210-250 and spills).
    ``specialized`` (or the option ``fwd_warp_specialize=1``), at D=128: the warp-specialized
    forward (kernels/hopper.py, Gluon), `WARP_SPECIALIZED` (see `tiles_and_layout`). Its
    partitions are written for that shape, bf16/fp16 and D=128 (golden-tested and measured
    there only); the options may not ask for it elsewhere. ``bwd_specialized`` (or the option
    ``bwd_warp_specialize=1``), likewise: the fused warp-specialized backward,
    `BWD_WARP_SPECIALIZED`.
    fp32 or D > 128: smaller tiles that fit shared memory (golden-tested, untuned). The
    interpreter (CPU): 32x32, which keeps its numpy work small.
    """
    options = options or {}
    specialized = bool(options.get("fwd_warp_specialize", specialized))
    bwd_specialized = bool(options.get("bwd_warp_specialize", bwd_specialized))
    if device_type != "cuda":
        fwd = bwd = TileConfig(32, 32)
    elif head_dim > 128 and dtype == torch.float32:
        fwd = bwd = TileConfig(32, 32, 4, 1)
    elif head_dim > 128 or dtype == torch.float32:
        fwd, bwd = TileConfig(64, 32, 4, 2), TileConfig(32, 32, 4, 1)
    else:
        wide = dense and head_dim > 64  # at D=64 the 128x128 forward was 20% slower on causal 16K
        fwd = TileConfig(128, 128, 8, 2) if wide else TileConfig(64, 64, 4, 2)
        fwd = WARP_SPECIALIZED if specialized and head_dim == 128 else fwd
        bwd = BWD_WARP_SPECIALIZED if bwd_specialized and head_dim == 128 else TileConfig(64, 64, 4, 2)
    shared = {k: v for k, v in options.items() if not k.startswith(("fwd_", "bwd_"))}
    fwd, bwd = (replace(cfg, **{**shared, **{k[4:]: v for k, v in options.items() if k.startswith(prefix)}})
                for cfg, prefix in ((fwd, "fwd_"), (bwd, "bwd_")))
    if (device_type == "cuda" and dtype != torch.float32 and head_dim <= 64
            and (fwd.block_m, fwd.block_n, fwd.num_warps) == (64, 64, 4)
            and not any(_caps_registers(name) for name in options)):
        fwd = replace(fwd, max_registers=THREE_PROGRAMS)  # sized for this tile: not for the options' others
    for prefix, name, cfg, kernel in (("fwd", "forward", fwd, WARP_SPECIALIZED),
                                      ("bwd", "backward", bwd, BWD_WARP_SPECIALIZED)):
        if (device_type == "cuda" and cfg.warp_specialize
                and (replace(cfg, persistent=0) != kernel or head_dim != 128 or dtype == torch.float32)):
            raise PatterncError(f"{prefix}_warp_specialize runs only at head dim 128, fp16 or bf16, with "
                                f"{kernel.block_m}x{kernel.block_n} {name} tiles, 4 warps, 2 stages and no register "
                                f"cap (got {cfg.block_m}x{cfg.block_n}, {cfg.num_warps} warps, {cfg.num_stages} "
                                f"stages, cap {cfg.max_registers}, D={head_dim}, {str(dtype).removeprefix('torch.')}): "
                                f"its kernel is written for that shape")
    if device_type == "cuda" and fwd.persistent and not fwd.warp_specialize:
        raise PatterncError("fwd_persistent needs fwd_warp_specialize=1: only the warp-specialized forward loops "
                            "over several query blocks per program")
    return fwd, bwd


def is_dense(layout: BlockLayout) -> bool:
    """At least 128 query blocks with rows of at least 64 tiles on average, at most 1% partial
    (causal and `all` from ~16K tokens at 64x64 tiles): where bigger forward tiles pay. Sparser
    layouts lose more on their partial tiles and short rows; fewer query blocks leave fewer,
    longer programs (`all` at 4K: 8% slower), and a few query rows (decoding) fill no more of
    a bigger tile."""
    tiles = layout.num_full + layout.num_partial
    return (layout.num_q_blocks >= 128 and tiles >= 64 * layout.num_q_blocks
            and layout.num_partial <= 0.01 * tiles)


def long_rows(layout: BlockLayout) -> bool:
    """At least 32 query blocks with rows of at least 32 tiles on average, at most 5% partial
    (causal, `all` and P4 from 4K tokens at 64x64 tiles; not P3's 1K-key window): where the
    warp-specialized forward pays (A/B on an H100, D=128, v12's Triton version: forward causal
    4K -12%, 16K -8%, `all` 4K -19%, 16K -16%; P3 4K -2%, 16K +5%: results/2026-11-26-ab-v12-
    ws-h100.md; v14's Gluon kernel against that: causal 16K -14%, `all` -10%, -ab-v14-gluon-
    h100.md; and against the plain loops on the union P4: 4K -16%, 16K -11%, while P1 and P2,
    rows of 10-15 tiles, a quarter or more partial, ran +24% and +130%: -ab-v14-gluon-unions-
    h100.md)."""
    tiles = layout.num_full + layout.num_partial
    return (layout.num_q_blocks >= 32 and tiles >= 32 * layout.num_q_blocks
            and layout.num_partial <= 0.05 * tiles)


def uniform_rows(layout: BlockLayout) -> bool:
    """At least 64 query blocks with rows of at least 12 tiles on average and none over 1.25x
    the mean, at most 15% partial (P3's 1K-key window from 4K tokens at 64x64 tiles): where
    persistent warp-specialized programs pay (a producer warp runs ahead into the next item's
    tiles; v14's Gluon kernel, P3 forward: 4K 0.184 -> 0.171 ms, 16K 0.685 -> 0.654 against one
    item per program, results/2026-11-26-ab-v14-gluon-h100.md; v13's Triton version, H100, P3's
    forward kernel against the 64x64 one: 4K 0.179 -> 0.165 ms, 8K 0.356 ->
    0.330, 16K 0.717 -> 0.659 (profiler, results/2026-11-26-profile-v13-persistent-P3-h100.txt;
    the backward's kernels unchanged; forward+backward wall times at 4K are CPU-bound and read
    +14% and -11% in different runs)). Not for `long_rows` (v13, Triton's version: `all` 16K
    forward +3.5%, causal 16K +12%: rows of 1 to 128 tiles dealt out in turn leave programs idle
    at the end; results/2026-11-26-ab-v13-persistent-h100.md, -persistent2-; v14's Gluon kernel:
    not measured), nor (the plan) with GQA,
    whose packed 64x64 forward reads K/V once per group (not measured against this one)."""
    rows = (layout.full.counts + layout.partial.counts).double()
    tiles = float(rows.sum())
    return (layout.num_q_blocks >= 64 and tiles >= 12 * layout.num_q_blocks
            and float(rows.max()) <= 1.25 * tiles / layout.num_q_blocks and layout.num_partial <= 0.15 * tiles)


def tiles_and_layout(layout_at, device_type: str, dtype: torch.dtype, head_dim: int, options: Options | None = None,
                     group: int = 1, hopper: bool = True, specializable: bool = False,
                     deterministic: bool = False) -> tuple[TileConfig, TileConfig, BlockLayout]:
    """`choose_tiles` with the layout's say: (forward, backward, forward layout), where
    ``layout_at(block_m, block_n)`` builds the layout at a tile (its rows: ``block_m // pack``
    queries, see `packing`). Options that set any forward tile setting (size, warps, stages,
    ``fwd_warp_specialize``) leave it to them; a register cap does not, nor does
    ``fwd_persistent=0``, which only keeps the choice's programs to one item each. The bigger tiles need Hopper (``hopper``: the
    GPU is sm_90 or newer): the warp-specialized forward where ``specializable`` (sm_90, Triton
    3.6) with `long_rows`, or with `uniform_rows` (then persistent), else the dense tiles where
    `is_dense`. The fused warp-specialized backward (hopper.py, fp16/bf16, D=128) where
    ``specializable`` with `long_rows` (A/B on an H100, forward+backward at 16K against the plain
    kernels: causal -16%, `all` -14%, P4 -6%, causal with GQA -7%; P3, `uniform_rows` only, +2%:
    results/2026-11-26-ab-v15-fused-bwd-h100.md; `long_rows` at 64x64 tiles, whatever the
    forward's options), unless options set any backward setting (``bwd_``-prefixed or shared; a
    register cap of 0 is none) or ``deterministic`` (its dQ sums are in no fixed order; the
    option ``bwd_warp_specialize=1`` still asks for it)."""
    options = options or {}
    fwd, bwd = choose_tiles(device_type, dtype, head_dim, options)
    for name, cfg in (("fwd", fwd), ("bwd", bwd)):
        if cfg.warp_specialize and device_type == "cuda" and not hopper:
            raise PatterncError(f"{name}_warp_specialize needs a Hopper GPU (sm_90): its kernel uses Hopper's wgmma "
                                f"and TMA")
        if cfg.warp_specialize and device_type == "cuda" and not specializable:
            raise PatterncError(f"{name}_warp_specialize needs an sm_90 GPU and Triton 3.6, which its Gluon kernel "
                                f"(patternc/kernels/hopper.py) is written and measured for")
    layout = layout_at(fwd.block_m // packing(fwd, group), fwd.block_n)
    forward_tile = [name for name in options
                    if not name.startswith("bwd_") and not _caps_registers(name) and name != "fwd_persistent"]
    capped = any(_caps_registers(name) and value and not name.startswith("bwd_") for name, value in options.items())
    long, uniform = long_rows(layout), uniform_rows(layout) and group == 1  # GQA keeps its packed tile
    specialized = specializable and head_dim == 128 and (long or uniform) and not capped
    backward_tile = [name for name, value in options.items()  # any backward setting, a cap included (not 0: none)
                     if not name.startswith("fwd_") and (value or not _caps_registers(name))]
    fusable = specializable and head_dim == 128 and dtype != torch.float32 and not deterministic
    if fusable and not backward_tile and long_rows(layout_at(64, 64)):  # whatever tile the forward options ask
        _, bwd = choose_tiles(device_type, dtype, head_dim, options, bwd_specialized=True)
    if hopper and (specialized or is_dense(layout)) and not forward_tile:
        dense, _ = choose_tiles(device_type, dtype, head_dim, options, dense=True, specialized=specialized)
        dense = replace(dense, persistent=int(specialized and uniform and not long
                                              and options.get("fwd_persistent", 1)))
        if dense != fwd:
            fwd, layout = dense, layout_at(dense.block_m // packing(dense, group), dense.block_n)
    return fwd, bwd, layout


@dataclass(frozen=True)
class KernelPlan:
    """The chosen kernel pieces for one (pattern, lengths, query offset, device, dtype, head dim)."""

    pattern: Pattern
    q_len: int
    kv_len: int
    q_offset: int
    device: torch.device
    dtype: torch.dtype
    head_dim: int
    source: KernelSource  # the generated mask module of pattern.optimized, for the terms partial in its layouts
    fwd: TileConfig
    bwd: TileConfig
    fwd_layout: BlockLayout  # at the forward tile (rows: fwd.block_m // pack queries), on the device
    bwd_layout: BlockLayout  # at the backward tile, on the device
    params: torch.Tensor  # int32 PARAMS, on the device
    random_slots: int
    fwd_row_tiles: int  # the most tiles any query block of the forward layout visits
    pack: int  # query heads per forward program: the GQA group, or 1 (see `packing`)
    hopper: bool  # a GPU of sm_90 or newer: TMA descriptors, and room for the dense forward tiles
    fwd_schedule: Schedule  # of the forward layout's query blocks
    dq_schedule: Schedule  # of the backward layout's query blocks
    dkdv_schedule: Schedule  # of the backward layout's key blocks
    options: tuple = ()  # the tile options it was made with, sorted (name, value) pairs
    group: int = 1  # query heads per kv head
    launches: dict = field(default_factory=dict, init=False, compare=False, repr=False)  # patternc.ops.launch

    @property
    def specialized(self) -> bool:
        """It runs a warp-specialized kernel (hopper.py), forward or backward: it has an `interim`."""
        return not self.interpret and bool(self.fwd.warp_specialize or self.bwd.warp_specialize)

    @functools.cached_property
    def interim(self) -> KernelPlan | None:
        """The same call's plan with the plain kernels (tiles of 64x64), which compile in ~1 s
        where the warp-specialized ones take 2.5-5.5 s: a new structure's first calls run it while
        this plan's own kernels compile in child processes (`patternc.ops.launch._compiling`).
        Built when first asked for; None where this plan is not `specialized`."""
        if not self.specialized:
            return None
        plain = {name: value for name, value in self.options if name != "fwd_persistent"}
        return plan_for(self.pattern, self.q_len, self.kv_len, self.q_offset, self.device, self.dtype,
                        self.head_dim, {**plain, "fwd_warp_specialize": 0, "bwd_warp_specialize": 0}, self.group)

    @property
    def interpret(self) -> bool:
        """True when the kernels run in Triton's interpreter (CPU tensors)."""
        return self.device.type != "cuda"

    @property
    def d_pad(self) -> int:
        return max(16, 1 << (self.head_dim - 1).bit_length())

    def __str__(self) -> str:
        def tile(name, cfg, lay):
            cap = f", at most {cfg.max_registers} registers" if cfg.max_registers else ""
            cap += f", {cfg.loop}" if cfg.loop else ""
            return (f"{name} {cfg.block_m}x{cfg.block_n} tiles ({cfg.num_warps} warps, {cfg.num_stages} stages{cap}): "
                    f"{lay.num_full} full, {lay.num_partial} partial")

        return (f"KernelPlan {self.pattern} at q_len={self.q_len} kv_len={self.kv_len} q_offset={self.q_offset}, "
                f"{str(self.dtype).removeprefix('torch.')} D={self.head_dim} on {self.device}\n"
                f"  {tile('forward ', self.fwd, self.fwd_layout)}\n  {tile('backward', self.bwd, self.bwd_layout)}")


@dataclass(frozen=True)
class Schedule:
    """The order in which a kernel's programs take their blocks (query blocks, or key blocks for
    dK/dV): ``order[:heavy]`` are the heavy blocks, longest list first, taken first for every
    (batch, head); then each (batch, head) takes ``order[heavy:]``, the rest in index order (so
    neighbouring programs share a head's K/V in L2). Longest first: a global query row's block
    visits every key tile, and a program that starts it late runs alone at the end."""

    order: torch.Tensor  # int32 [blocks]
    heavy: int

    @staticmethod
    def of(counts: torch.Tensor) -> Schedule:
        """From each block's number of tiles."""
        heavy = counts > HEAVY * counts.double().mean()
        blocks = torch.arange(counts.numel())
        first = blocks[heavy][torch.argsort(counts[heavy], descending=True, stable=True)]
        return Schedule(torch.cat([first, blocks[~heavy]]).to(torch.int32), int(first.numel()))

    def to(self, device) -> Schedule:
        return Schedule(self.order.to(device), self.heavy)


def packing(cfg: TileConfig, group: int) -> int:
    """Query heads per forward program. With GQA (``group`` query heads per kv head) one program
    takes a query block of the whole group, so K/V tiles are read once per group instead of once
    per head: the win of decoding, where a head's few query rows use a sliver of each tile. The
    tile's rows are then ``block_m // group`` queries of each head; at least 16 of them. Not in
    the warp-specialized forward, which loads a head's rows through a descriptor."""
    fits = cfg.block_m % group == 0 and cfg.block_m // group >= 16
    return group if group > 1 and fits and not cfg.warp_specialize else 1


def plan_for(pattern: Pattern, q_len: int, kv_len: int, q_offset: int | None, device: torch.device,
             dtype: torch.dtype, head_dim: int, options: Options | None = None, group: int = 1) -> KernelPlan:
    """The plan for these shapes (from the one bounded cache, else built); ``group``: query
    heads per kv head. Under `torch.use_deterministic_algorithms` the plan's backward is the
    plain kernels' (the fused one adds dQ up in whatever order its programs finish; asked for
    by the option ``bwd_warp_specialize=1``, it raises there as torch's nondeterministic
    operations do)."""
    q_offset = pattern.resolve(q_len, kv_len, q_offset).q_offset  # the one place that defaults it
    return _plan(pattern, q_len, kv_len, q_offset, device, dtype, head_dim, tuple(sorted((options or {}).items())),
                 group, torch.are_deterministic_algorithms_enabled())


@functools.lru_cache(maxsize=PLAN_CACHE_SIZE)
def _plan(pattern, q_len, kv_len, q_offset, device, dtype, head_dim, options, group, deterministic) -> KernelPlan:
    if abs(q_offset) + q_len + kv_len >= INT32_LIMIT:
        raise PatterncError(f"q_len={q_len}, kv_len={kv_len} and q_offset={q_offset} exceed the kernels' int32 "
                            f"positions (|q_offset| + q_len + kv_len must stay below 2**31)")
    if device.type != "cuda" and dtype == torch.bfloat16:
        raise PatterncError("bfloat16 kernels cannot run on the CPU: the Triton interpreter's bf16 dot is "
                            "inaccurate; use float32 or float16 there, or a GPU")
    ctx = pattern.resolve(q_len, kv_len, q_offset, optimized=True)
    layouts = {}

    def layout_at(block_m, block_n):
        if (block_m, block_n) not in layouts:
            layouts[block_m, block_n] = build_layout(ctx, block_m, block_n)
        return layouts[block_m, block_n]

    major = torch.cuda.get_device_capability(device)[0] if device.type == "cuda" else 0
    hopper = major >= 9
    # the warp-specialized forward only where it was measured and golden-tested: sm_90, Triton 3.6
    fwd, bwd, lay = tiles_and_layout(layout_at, device.type, dtype, head_dim, dict(options), group, hopper,
                                     specializable=major == 9 and hopper_supported(), deterministic=deterministic)
    back = layout_at(bwd.block_m, bwd.block_n)
    source = generate(ctx.root, lay.partial_terms | back.partial_terms)  # the terms the kernels may meet partial
    rows = lay.full.counts + lay.partial.counts
    tables = (lay, back, params(ctx), Schedule.of(rows), Schedule.of(back.full.counts + back.partial.counts),
              Schedule.of(back.full_t.counts + back.partial_t.counts))
    lay, back, par, *schedules = _to_device(tables, device)
    return KernelPlan(pattern, q_len, kv_len, q_offset, device, dtype, head_dim, source,
                      fwd, bwd, lay, back, par, ctx.random_slots, int(rows.max()) if lay.num_q_blocks else 0,
                      packing(fwd, group), hopper, *schedules, options=options, group=group)


def _to_device(tables: tuple, device: torch.device) -> list:
    """The plan's tables on ``device``. On a GPU, copied from a helper thread: a plan can be
    built during the warm-up of `torch.compile(mode="reduce-overhead")`, whose CUDA graphs take
    every allocation of the calling thread into their private memory pool, where tables that
    outlive the call must not be (torch raises). On the caller's stream (whose kernels read
    them, so the allocator frees them in order), unless it is capturing a graph, which must
    not record the copies; they are synchronous (pageable memory)."""
    if device.type != "cuda":
        return [t.to(device) for t in tables]
    stream = None if torch.cuda.is_current_stream_capturing() else torch.cuda.current_stream(device)

    def copy():
        with torch.cuda.device(device), torch.cuda.stream(stream):
            return [t.to(device) for t in tables]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(copy).result()
