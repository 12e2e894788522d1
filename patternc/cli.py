"""The command line: ``patternc compile | show | analyze | check | bench``.

Every error is printed to stderr as ``file:line:col: error: ...`` with exit status 2;
usage errors exit 2 as well (argparse's convention).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

from ._version import __version__
from .analyze import table
from .errors import PatterncError, require_int
from .lang import load, parse
from .pattern import Pattern


LENGTH_LIMIT = 2**30  # a length the kernels can index (positions are int32: Lq + Lk < 2**31)


def _positive(text: str) -> int:
    try:
        return require_int("value", int(text))
    except (ValueError, PatterncError):
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def _length(text: str) -> int:
    value = _positive(text)
    if value > LENGTH_LIMIT:
        raise argparse.ArgumentTypeError(f"expected a length up to 2**30 = {LENGTH_LIMIT} (the kernels index "
                                          f"positions in int32), got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        return require_int("seed", int(text), minimum=0, maximum=2**63 - 1)
    except (ValueError, PatterncError):
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2**63 - 1, got {text!r}") from None


def _tile(text: str) -> int:
    value = _positive(text)
    if value < 16 or value > 256 or value & (value - 1):
        raise argparse.ArgumentTypeError(f"expected a power of two from 16 to 256 (a kernel tile), got {text!r}")
    return value


def _read_pattern(args) -> Pattern:
    if args.expr is not None:
        if args.file is not None:
            raise PatterncError("give either a FILE or -e EXPR, not both")
        return parse(args.expr, "<expr>")
    if args.file is None:
        raise PatterncError("no pattern given: pass a .attn FILE, '-' for stdin, or -e 'EXPR'")
    return _load(args.file)


def _load(file: str) -> Pattern:
    """A pattern from a .attn file, or from standard input for '-'."""
    if file != "-":
        return load(file)
    if sys.stdin is None:  # started with standard input closed (`<&-`)
        raise PatterncError("cannot read the pattern from standard input: it is closed")
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    try:
        text = data.decode("utf-8-sig")  # a byte order mark is tolerated, as in files
    except UnicodeDecodeError as exc:
        raise PatterncError(f"standard input is not UTF-8 text (byte {exc.start})") from None
    return parse(text, "<stdin>")


def _cmd_compile(args) -> int:
    pattern = _read_pattern(args)
    import torch

    from .kernels.cache import hopper_supported
    from .plan import tiles_and_layout

    options = {k: v for k, v in (("block_m", args.block_m), ("block_n", args.block_n)) if v is not None}
    fwd, bwd, lay = tiles_and_layout(lambda m, n: pattern.layout(args.seq_len, args.kv_len, m, n), args.device,
                                     getattr(torch, args.dtype), args.head_dim, options,
                                     specializable=hopper_supported())  # on an H100 (sm_90)
    tiles = lay.num_q_blocks * lay.num_kv_blocks
    out = sys.stderr if args.emit == "-" else sys.stdout  # keep stdout for the source
    print(f"pattern   {pattern}", file=out)
    print(f"kernels   {args.device} {args.dtype} D={args.head_dim}: forward tiles {fwd.block_m}x{fwd.block_n}"
          f"{f' ({fwd.loop})' if fwd.loop else ''}, "
          f"backward tiles {bwd.block_m}x{bwd.block_n}", file=out)
    print(f"lengths   q_len={lay.q_len} kv_len={lay.kv_len}; forward grid {lay.num_q_blocks} x {lay.num_kv_blocks} "
          f"= {tiles} tiles", file=out)
    print(f"tiles     {lay.num_full} full, {lay.num_partial} partial, {lay.num_empty} empty", file=out)
    print(f"density   {100 * lay.density:.3f}% of (query, key) pairs attend", file=out)
    print(f"FLOPs     the forward kernel computes {100 * lay.block_density:.2f}% of dense attention's tiles: "
          f"{100 * (1 - lay.block_density):.2f}% of the FLOPs saved", file=out)
    if args.build:
        import time

        from .nn import precompile

        if args.heads is None:
            raise PatterncError("--build needs --heads (and --kv-heads for grouped-query attention): the kernels "
                                "are specialized on head counts, so give the model's")

        started = time.perf_counter()
        precompile(pattern, (args.batch, args.heads, args.seq_len, args.head_dim),
                   (args.batch, args.kv_heads or args.heads, args.kv_len or args.seq_len, args.head_dim),
                   dtype=getattr(torch, args.dtype), device=args.device, backward=not args.no_backward, **options)
        print(f"built     the {'forward and backward' if not args.no_backward else 'forward'} kernels for "
              f"B={args.batch} Hq={args.heads} Hkv={args.kv_heads or args.heads} into Triton's cache "
              f"({time.perf_counter() - started:.1f} s)", file=out)
    if args.emit is not None:
        from .kernels.emit import generate

        # the terms partial on some tile of the forward's or the backward's layout (as the plan's module)
        live = lay.partial_terms | pattern.layout(args.seq_len, args.kv_len, bwd.block_m, bwd.block_n).partial_terms
        text = emit_text(pattern, args.seq_len, args.kv_len, live)
        if args.emit == "-":
            sys.stdout.write(text)
        else:
            directory = Path(args.emit)
            try:
                directory.mkdir(parents=True, exist_ok=True)
                path = directory / f"{generate(pattern.optimized, live).module_name}.py"
                if path.exists() and path.read_text(encoding="utf-8") != text:
                    raise PatterncError(f"'{path}' already holds the kernel of another pattern or length of the "
                                        "same structure; emit into another directory")
                path.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise PatterncError(f"cannot write kernel source to '{directory}': {exc.strerror or exc}") from None
            print(f"kernel    {path}", file=out)
    return 0


def emit_text(pattern: Pattern, q_len: int, kv_len: int | None, live: int | None = None) -> str:
    """What `compile --emit` writes: a preamble naming the pattern and its PARAMS at these
    lengths, then the exact cached mask module (``live``: the terms partial in the plan's
    layouts, `emit.generate`)."""
    from .kernels.emit import generate, params

    src = generate(pattern.optimized, live)
    ctx = pattern.resolve(q_len, kv_len, optimized=True)
    values = params(ctx)
    tables = f" + {values.numel() - src.scalars} table entries" if values.numel() > src.scalars else ""
    lines = [f"# pattern: {pattern}",
             "# kernels: patternc/kernels/flash.py, called with MASK=pattern_mask from this module",
             f"# module:  {src.module_name}.py (shared by every pattern of this structure)",
             f"# PARAMS at q_len={ctx.q_len}, kv_len={ctx.kv_len}: {values[:src.scalars].tolist()}{tables}"]
    return "\n".join(lines) + "\n#\n" + src.text


def _cmd_show(args) -> int:
    pattern = _read_pattern(args)
    kv_len = args.kv_len or args.seq_len
    limit = args.max_tokens or (512 if args.out else 64)
    tokens = not args.blocks and args.seq_len <= limit and kv_len <= limit
    if args.out is not None:
        from .plot import save_picture

        print(save_picture(pattern, args.seq_len, kv_len, args.out, tokens=tokens, block_m=args.block_m,
                           block_n=args.block_n))
        return 0
    if tokens:
        mask = pattern.dense_mask(args.seq_len, kv_len)
        print(f"{pattern}: {args.seq_len} queries x {kv_len} keys ('#' attends, '.' does not)")
        for row in mask.tolist():
            print("  " + "".join("#" if x else "." for x in row))
        return 0
    print(pattern)
    print(pattern.layout(args.seq_len, kv_len, args.block_m, args.block_n))
    return 0


def _cmd_analyze(args) -> int:
    named = [("<stdin>" if f == "-" else f, _load(f)) for f in args.files]
    named += [(text, parse(text, "<expr>")) for text in args.expr]
    if not named:
        raise PatterncError("no pattern given: pass .attn FILEs, '-' for stdin, or -e 'EXPR'")
    print(table([(name, str(pattern), pattern.analyze(args.seq_len)) for name, pattern in named]))
    return 0


def _device(choice: str) -> str:
    """``--device``: 'auto' is cuda where a GPU is available, else cpu; cuda without one is refused."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise PatterncError("--device cuda: no CUDA device is available")
    return choice


def _cmd_check(args) -> int:
    pattern = _read_pattern(args)
    import torch

    device = _device(args.device)
    if device == "cpu" and args.dtype == "bfloat16":
        raise PatterncError("--dtype bfloat16 cannot be checked on the CPU: the Triton interpreter's bf16 dot "
                            "is inaccurate; use float32 or float16, or a GPU")
    dtype = getattr(torch, args.dtype)
    q_len = args.seq_len or (1024 if device == "cuda" else 128)
    options = {k: v for k, v in (("block_m", args.block_m), ("block_n", args.block_n)) if v is not None}
    from . import golden

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rows = golden.compare(pattern, q_len, args.kv_len, batch=args.batch, heads=args.heads, kv_heads=args.kv_heads,
                          head_dim=args.head_dim, dtype=dtype, device=device, seed=seed, **options)
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU, Triton interpreter"
    print(f"pattern   {pattern}")
    print(f"inputs    {args.dtype}, B={args.batch} Hq={args.heads} Hkv={args.kv_heads or args.heads} "
          f"Lq={q_len} Lk={args.kv_len or q_len} D={args.head_dim}, on {where}, --seed {seed}")
    print(golden.table(rows))
    return 0 if all(r.ok for r in rows) else 1


def _cmd_bench(args) -> int:
    pattern = _read_pattern(args)
    import torch

    device = _device(args.device)
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    kv_len = args.kv_len or args.seq_len
    from . import bench

    rows = bench.run(pattern, args.seq_len, kv_len, batch=args.batch, heads=args.heads, kv_heads=args.kv_heads,
                     head_dim=args.head_dim, dtype=dtype, device=device, backward=not args.no_backward,
                     seed=args.seed if args.seed is not None else 0, seconds=args.seconds)
    pairs = pattern.layout(args.seq_len, kv_len).attended_pairs * args.batch * args.heads
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"pattern   {pattern}")
    print(f"inputs    {str(dtype).removeprefix('torch.')}, B={args.batch} Hq={args.heads} "
          f"Hkv={args.kv_heads or args.heads} Lq={args.seq_len} Lk={kv_len} D={args.head_dim}, on {where}; "
          f"torch {torch.__version__}")
    print(f"density   {pairs / (args.batch * args.heads * args.seq_len * kv_len):.3%} of pairs attend; "
          "median times (torch.utils.benchmark); TF/s over attended pairs")
    print(bench.table(rows, pairs, args.head_dim))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patternc",
        description="Compile declarative sparse attention patterns to fused Triton flash-attention kernels.",
        epilog="Example: patternc compile examples/lecture.attn --seq-len 16384",
    )
    parser.add_argument("--version", action="version", version=f"patternc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    source = argparse.ArgumentParser(add_help=False)
    source.add_argument("file", nargs="?", metavar="FILE", help="a .attn file, or '-' to read standard input")
    source.add_argument("-e", "--expr", metavar="EXPR", help="the pattern text itself, e.g. -e 'window(3) + global(first)'")

    shape = argparse.ArgumentParser(add_help=False)
    shape.add_argument("--seq-len", "-n", type=_length, required=True, metavar="N", help="number of queries (and keys, unless --kv-len)")
    shape.add_argument("--kv-len", type=_length, metavar="M", help="number of keys (default: N)")

    p = commands.add_parser("compile", parents=[source, shape], help="check a pattern, build its layout and report it",
                            description="Parse and check a pattern, choose the kernels' tiles for a target, build the "
                                        "block layout at those tiles and print the canonical pattern, density, "
                                        "full/partial/empty tiles and the FLOPs saved versus dense.")
    p.add_argument("--block-m", type=_tile, metavar="BM", help="query rows per tile (default: the kernels' choice)")
    p.add_argument("--block-n", type=_tile, metavar="BN", help="key columns per tile (default: the kernels' choice)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="kernel target (default cuda)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16", help="default bfloat16")
    p.add_argument("--head-dim", type=_positive, default=64, metavar="D", help="default 64")
    p.add_argument("--emit", metavar="DIR", help="also write the generated Triton mask module into DIR ('-': stdout)")
    p.add_argument("--build", action="store_true",
                   help="also compile the kernels ahead of time into Triton's cache (patternc.precompile; needs a GPU)")
    p.add_argument("--batch", type=_positive, default=1, metavar="B", help="with --build: batch size (default 1)")
    p.add_argument("--heads", type=_positive, metavar="H", help="with --build: the model's query heads")
    p.add_argument("--kv-heads", type=_positive, metavar="H", help="with --build: key/value heads (default: --heads)")
    p.add_argument("--no-backward", action="store_true", help="with --build: the forward's kernels only")
    p.set_defaults(run=_cmd_compile)

    p = commands.add_parser("show", parents=[source, shape], help="draw a pattern (tokens when small, else blocks)",
                            description="Draw the pattern: token by token when both lengths are at most --max-tokens, "
                                        "else its block layout ('#' full, '+' partial, '.' empty); with --out, as a "
                                        "picture (needs matplotlib: pip install \"patternc[viz]\").")
    p.add_argument("--block-m", type=_positive, default=128, metavar="BM", help="query rows per block (default 128)")
    p.add_argument("--block-n", type=_positive, default=128, metavar="BN", help="key columns per block (default 128)")
    p.add_argument("--max-tokens", type=_positive, metavar="T",
                   help="largest length drawn token by token (default 64 in text, 512 in a picture)")
    p.add_argument("--blocks", action="store_true", help="always draw the block layout")
    p.add_argument("--out", "-o", metavar="PICTURE", help="write a picture instead: PICTURE.png, .svg or .pdf")
    p.set_defaults(run=_cmd_show)

    p = commands.add_parser("analyze", help="information flow through stacked layers; compare patterns",
                            description="How information flows through a stack of attention layers with residual "
                                        "connections (coverage per layer, closure, layers to closure) and row "
                                        "statistics, one column per pattern. Definitions: patternc/analyze.py.")
    p.add_argument("files", nargs="*", metavar="FILE", help=".attn files ('-': standard input)")
    p.add_argument("-e", "--expr", action="append", default=[], metavar="EXPR", help="a pattern text (repeatable)")
    p.add_argument("--seq-len", "-n", type=_length, required=True, metavar="N", help="number of tokens")
    p.set_defaults(run=_cmd_analyze)

    p = commands.add_parser("check", parents=[source], help="golden test: kernels vs dense float64 attention",
                            description="Run the generated kernels (forward and backward) on random inputs and compare "
                                        "O, dQ, dK, dV with dense masked attention in float64. On the CPU the kernels "
                                        "run in Triton's interpreter. Exit status 1 if any error exceeds its tolerance.")
    p.add_argument("--seq-len", "-n", type=_length, metavar="N", help="queries (default 1024 on a GPU, 128 on the CPU)")
    p.add_argument("--kv-len", type=_length, metavar="M", help="keys (default: N)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16", help="default float16")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda if available")
    p.add_argument("--batch", type=_positive, default=1, metavar="B")
    p.add_argument("--heads", type=_positive, default=2, metavar="H", help="query heads (default 2)")
    p.add_argument("--kv-heads", type=_positive, metavar="HKV", help="key/value heads, dividing H (default: H)")
    p.add_argument("--head-dim", type=_positive, default=64, metavar="D", help="default 64")
    p.add_argument("--block-m", type=_tile, metavar="BM", help="tile rows (default: chosen per device)")
    p.add_argument("--block-n", type=_tile, metavar="BN", help="tile columns (default: chosen per device)")
    p.add_argument("--seed", type=_seed, help="seed for the random inputs, 0 to 2**63 - 1 (default: fresh)")
    p.set_defaults(run=_cmd_check)

    p = commands.add_parser("bench", parents=[source, shape], help="time patternc against SDPA and FlexAttention",
                            description="Time the pattern's attention, forward and forward+backward, with patternc, "
                                        "SDPA given the pattern's dense mask, and (on a GPU) compiled FlexAttention "
                                        "with the pattern's BlockMask; each is checked against patternc first. On "
                                        "the CPU patternc runs its reference path. The full table: benchmarks/run.py.")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: cuda if available")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="default bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--batch", type=_positive, default=2, metavar="B", help="default 2")
    p.add_argument("--heads", type=_positive, default=16, metavar="H", help="query heads (default 16)")
    p.add_argument("--kv-heads", type=_positive, metavar="HKV", help="key/value heads, dividing H (default: H)")
    p.add_argument("--head-dim", type=_positive, default=128, metavar="D", help="default 128")
    p.add_argument("--no-backward", action="store_true", help="time the forward only")
    p.add_argument("--seconds", type=float, default=0.5, help="measuring time per method and pass (default 0.5)")
    p.add_argument("--seed", type=_seed, help="seed for the random inputs (default 0)")
    p.set_defaults(run=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.run(args)
        sys.stdout.flush()  # a full disk shows here, not at interpreter exit
        return code
    except PatterncError as exc:
        print(exc.render() if exc.source else f"patternc: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `patternc show ... | head`
        return 0
    except OSError as exc:  # closed stdin, a full disk, an unwritable file: the environment, not a bug
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"patternc: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in patternc, Triton or torch: one line, not a traceback
        if os.environ.get("PATTERNC_TRACEBACK"):
            raise
        print(f"patternc: internal error: {type(exc).__name__}: {exc}\n"
              "(set PATTERNC_TRACEBACK=1 to see the traceback, and please report it)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
