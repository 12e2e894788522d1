"""The command line: `patternc compile | show | check`, in-process through `patternc.cli.main` (fast)
and, a few times, as a real `python -m patternc` subprocess (exit codes, streams)."""

import argparse
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import patternc
from patternc.kernels import emit
from patternc.cli import build_parser
from helpers import block_classes, run_cli as run

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.attn"))


def run_subprocess(*argv, stdin=None):
    return subprocess.run([sys.executable, "-m", "patternc", *map(str, argv)], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=120)


def compile_report(out):
    """The numbers `compile` prints: full/partial/empty tiles, density % and FLOPs saved %."""
    tiles = re.search(r"(\d+) full, (\d+) partial, (\d+) empty", out)
    density = re.search(r"density\s+([\d.]+)%", out)
    saved = re.search(r"([\d.]+)% of the FLOPs saved", out)
    assert tiles and density and saved, out
    return tuple(map(int, tiles.groups())), float(density.group(1)), float(saved.group(1))


def expected_report(pattern, lq, lk, bm, bn):
    """The same numbers, from the dense mask and a per-tile classification of it."""
    mask = pattern.dense_mask(lq, lk)
    classes = block_classes(mask, bm, bn)
    counts = tuple(int((classes == c).sum()) for c in (2, 1, 0))
    return counts, 100 * mask.float().mean().item(), 100 * (classes == 0).float().mean().item()


# ------------------------------------------------------------------ help
def _commands():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "usage: patternc" in out
    assert {"compile", "show"} <= set(_commands())
    for command in _commands():
        assert command in out


@pytest.mark.parametrize("command", _commands())
def test_command_help_exits_0(capsys, command):
    code, out, err = run(capsys, command, "--help")
    assert code == 0 and out.startswith(f"usage: patternc {command}") and err == ""
    if command in ("compile", "show"):
        assert "--seq-len" in out and "--expr" in out


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and patternc.__version__ in out


# ------------------------------------------------------------------ compile
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_compile_examples(capsys, path):
    n, bm, bn = 300, 64, 32
    code, out, err = run(capsys, "compile", path, "--seq-len", n, "--block-m", bm, "--block-n", bn)
    assert code == 0 and err == ""
    pattern = patternc.load(path)
    assert str(pattern) in out.splitlines()[0]
    counts, density, saved = compile_report(out)
    exp_counts, exp_density, exp_saved = expected_report(pattern, n, n, bm, bn)
    assert counts == exp_counts
    assert density == pytest.approx(exp_density, abs=0.001)
    assert saved == pytest.approx(exp_saved, abs=0.01)


def test_examples_directory_has_the_required_patterns():
    names = {p.stem for p in EXAMPLES}
    assert len(names) >= 5 and "lecture" in names


def test_compile_expr_with_kv_len(capsys):
    # bottom-right alignment: 32 queries at positions 32..63 of 64 keys, causal: 33 + ... + 64 of 2048
    code, out, err = run(capsys, "compile", "-e", "causal", "-n", 32, "--kv-len", 64, "--block-m", 16, "--block-n", 16)
    assert code == 0 and err == ""
    assert out.splitlines()[0].split()[-1] == "causal"
    counts, density, saved = compile_report(out)
    assert density == pytest.approx(100 * sum(range(33, 65)) / 2048, abs=0.001)
    # 16x16 tiles: query block 0 (positions 32..47) sees key blocks 0, 1 fully, block 2 (keys
    # 32..47) partly, block 3 not at all; query block 1 (48..63) sees 0-2 fully and 3 partly
    assert counts == (5, 2, 1) and saved == pytest.approx(12.5)


@pytest.mark.parametrize("dtype,head_dim,tile", [("bfloat16", 64, (64, 64)), ("float32", 64, (64, 32)),
                                                 ("float16", 256, (64, 32))])
def test_compile_reports_the_tiles_the_kernels_run(capsys, dtype, head_dim, tile):
    """The report is about the layout at the kernels' own tiles (the plan's choice)."""
    from patternc.plan import choose_tiles

    code, out, _ = run(capsys, "compile", REPO / "examples" / "lecture.attn", "-n", 1000, "--dtype", dtype,
                       "--head-dim", head_dim)
    fwd, _ = choose_tiles("cuda", getattr(torch, dtype), head_dim)
    assert code == 0 and (fwd.block_m, fwd.block_n) == tile
    assert f"forward tiles {tile[0]}x{tile[1]}" in out
    counts, _, _ = compile_report(out)
    assert counts == expected_report(patternc.load(REPO / "examples" / "lecture.attn"), 1000, 1000, *tile)[0]


def test_compile_reports_the_warp_specialized_forward(capsys):
    """Long rows of one term at D=128 on a GPU: the plan's warp-specialized 128x128 forward."""
    code, out, _ = run(capsys, "compile", "-e", "causal", "-n", 4096, "--head-dim", 128)
    assert code == 0 and "forward tiles 128x128 (warp-specialized)," in out
    code, out, _ = run(capsys, "compile", "-e", "causal + global(0:1)", "-n", 4096, "--head-dim", 128)
    assert code == 0 and "forward tiles 64x64," in out  # two terms


def test_compile_prints_the_canonical_pattern(capsys):
    code, out, _ = run(capsys, "compile", "-e", "window(left=1, right=1) + global(first, eos) + random(2)", "-n", 1024)
    str_ = "global(0, -1) + random(2, block=64, seed=0) + window(3)"
    assert code == 0 and str_ in out
    counts, density, saved = compile_report(out)
    exp_counts, exp_density, exp_saved = expected_report(patternc.parse(str_), 1024, 1024, 64, 64)  # bf16 D=64 tiles
    assert counts == exp_counts
    assert (density, saved) == pytest.approx((exp_density, exp_saved), abs=0.01)


def test_compile_reads_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("# from stdin\nlocal = window(3)\nlocal & causal\n"))
    code, out, err = run(capsys, "compile", "-", "-n", 64)
    assert code == 0 and err == ""
    assert "causal & window(3)" in out


# ------------------------------------------------------------------ show
def test_show_token_level(capsys):
    text, n = "global(first) + window(3)", 10
    code, out, err = run(capsys, "show", "-e", text, "-n", n)
    assert code == 0 and err == ""
    rows = [line.strip() for line in out.splitlines() if re.fullmatch(r"\s*[#.]+", line)]
    mask = patternc.parse(text).dense_mask(n)
    assert rows == ["".join("#" if x else "." for x in row) for row in mask.tolist()]


def test_show_token_level_unequal_lengths(capsys):
    code, out, _ = run(capsys, "show", "-e", "causal", "-n", 3, "--kv-len", 5)
    rows = [line.strip() for line in out.splitlines() if re.fullmatch(r"\s*[#.]+", line)]
    assert code == 0 and rows == ["###..", "####.", "#####"]


def test_show_block_level_for_large_lengths(capsys):
    text, n, b = "global(0:50) + window(left=150, right=0)", 1000, 100
    code, out, err = run(capsys, "show", "-e", text, "-n", n, "--block-m", b, "--block-n", b)
    assert code == 0 and err == ""
    rows = [line.strip() for line in out.splitlines() if re.fullmatch(r"\s*[#+.]+", line)]
    classes = block_classes(patternc.parse(text).dense_mask(n), b, b)
    assert rows == ["".join(".+#"[c] for c in row) for row in classes.tolist()]
    assert len(rows) == 10 and "#" in "".join(rows)  # some tiles are full, some partial


def test_show_blocks_flag_forces_block_level(capsys):
    code, out, _ = run(capsys, "show", "-e", "window(3)", "-n", 8, "--blocks", "--block-m", 4, "--block-n", 4)
    rows = [line.strip() for line in out.splitlines() if re.fullmatch(r"\s*[#+.]+", line)]
    assert code == 0 and rows == ["++", "++"]


# ------------------------------------------------------------------ show --out (pictures)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_show_out_png_token_mask(capsys, tmp_path):
    path = tmp_path / "mask.png"
    code, out, err = run(capsys, "show", REPO / "examples" / "lecture.attn", "-n", 300, "--out", path)
    assert code == 0 and err == "" and out == f"wrote {path}: token mask, 300 x 300\n"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_show_out_png_block_map_and_svg(capsys, tmp_path):
    code, out, _ = run(capsys, "show", "-e", "global(first) + window(left=255, right=0)", "-n", 4096,
                       "-o", tmp_path / "blocks.png")
    assert code == 0 and out.endswith("block map, 32 x 32 blocks of 128x128\n")
    assert (tmp_path / "blocks.png").read_bytes().startswith(PNG_MAGIC)
    code, out, _ = run(capsys, "show", "-e", "causal", "-n", 100, "--blocks", "--block-m", 16, "--block-n", 16,
                       "--out", tmp_path / "blocks.svg")
    text = (tmp_path / "blocks.svg").read_text()
    assert code == 0 and text.startswith("<?xml") and "<svg" in text and "</svg>" in text
    assert "block map, 7 x 7 blocks of 16x16" in out


def test_show_out_token_limit(capsys, tmp_path):
    """Pictures draw tokens up to 512 by default (text: 64); --max-tokens and --blocks decide otherwise."""
    for argv, what in [(["-n", 512], "token mask"), (["-n", 513], "block map"),
                       (["-n", 100, "--max-tokens", 99], "block map"), (["-n", 8, "--blocks"], "block map")]:
        code, out, _ = run(capsys, "show", "-e", "window(3)", *argv, "--out", tmp_path / "p.png")
        assert code == 0 and what in out, (argv, out)


def test_block_map_cells_follow_the_text_picture(monkeypatch):
    """Large block maps are drawn one cell per s x s blocks, with the text picture's rule."""
    from patternc import plot

    monkeypatch.setattr(plot, "MAX_CELLS", 6)
    lay = patternc.parse("global(3) + window(left=40, right=0) & causal").layout(300, block_m=16, block_n=16)
    cells, scale = plot._cells(lay.to_dense())
    assert scale == 4 and cells.shape == (5, 5)
    text = [line.strip() for line in lay.picture(max_width=6).splitlines()[1:]]
    assert ["".join(".+#"[c] for c in r) for r in cells.tolist()] == text and {"+", "."} <= set("".join(text))


def test_show_out_without_matplotlib_exits_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    path = tmp_path / "mask.png"
    code, out, err = run(capsys, "show", "-e", "causal", "-n", 8, "--out", path)
    assert code == 2 and out == "" and 'pip install "patternc[viz]"' in err
    assert not path.exists()


@pytest.mark.parametrize("name,fragment", [("mask.jpg", "must be a .png, .svg, .pdf file"),
                                           ("missing/mask.png", "cannot write picture")])
def test_show_out_bad_path_exits_2(capsys, tmp_path, name, fragment):
    code, out, err = run(capsys, "show", "-e", "causal", "-n", 8, "--out", tmp_path / name)
    assert code == 2 and out == "" and fragment in err


def test_compile_build_without_a_gpu_exits_2(capsys):
    """`compile --build` compiles for a GPU (tests/test_gpu.py runs it there); on the CPU a clear error."""
    code, out, err = run(capsys, "compile", "-e", "causal", "-n", 128, "--build", "--heads", 2, "--device", "cpu")
    assert code == 2 and "precompile needs a CUDA device" in err and "tiles" in out
    code, out, err = run(capsys, "compile", "-e", "causal", "-n", 128, "--build")
    assert code == 2 and "--build needs --heads" in err


# ------------------------------------------------------------------ errors
def assert_diagnostic(err, name, line, column, fragment):
    first, source_line, caret = err.rstrip("\n").split("\n")
    assert first.startswith(f"{name}:{line}:{column}: error: ") and fragment in first
    assert caret.index("^") == source_line.index("| ") + 2 + column - 1


def test_error_in_expr(capsys):
    code, out, err = run(capsys, "compile", "-e", "window(3) + windw(5)", "-n", 16)
    assert code == 2 and out == ""
    assert_diagnostic(err, "<expr>", 1, 13, "unknown component 'windw'; did you mean 'window'?")


def test_error_in_file(capsys, tmp_path):
    path = tmp_path / "bad.attn"
    path.write_text("# comment\nlocal = window(4)\nlocal\n")
    for command in ("compile", "show"):
        code, out, err = run(capsys, command, path, "-n", 16)
        assert code == 2 and out == ""
        assert_diagnostic(err, str(path), 2, 16, "window width must be odd")


def test_error_from_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("causal\n  + (all"))
    code, out, err = run(capsys, "compile", "-", "-n", 16)
    assert code == 2 and out == ""
    assert_diagnostic(err, "<stdin>", 2, 9, "unexpected end of input")


def test_error_at_layout_time(capsys):
    code, out, err = run(capsys, "compile", "-e", "window(3) + global(20)", "-n", 16)
    assert code == 2 and out == ""
    assert_diagnostic(err, "<expr>", 1, 13, "out of range")
    assert "16" in err


def test_missing_file(capsys, tmp_path):
    path = tmp_path / "nope.attn"
    code, out, err = run(capsys, "compile", path, "-n", 16)
    assert code == 2 and out == "" and str(path) in err and "error" in err


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["compile", "-e", "causal"], "--seq-len"),
        (["compile", "-e", "causal", "-n", "x"], "positive integer"),
        (["compile", "-e", "causal", "-n", "0"], "positive integer"),
        (["show", "-e", "causal", "-n", "8", "--block-m", "-4"], "positive integer"),
        (["frobnicate"], "invalid choice"),
        ([], "COMMAND"),
        (["compile", "-n", "8"], "no pattern given"),
        (["compile", "examples/lecture.attn", "-e", "causal", "-n", "8"], "not both"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and fragment in err


# ------------------------------------------------------------------ real processes
def test_subprocess_compile_and_help():
    result = run_subprocess("compile", REPO / "examples" / "lecture.attn", "--seq-len", 1024)
    assert result.returncode == 0, result.stderr
    assert "global(0, -1) + random(2, block=64, seed=0) + window(3)" in result.stdout
    assert result.stderr == ""


def test_subprocess_error_goes_to_stderr_with_status_2():
    result = run_subprocess("compile", "-", "-n", 64, stdin="a = window(3)\na + glbal(0)\n")
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert_diagnostic(result.stderr, "<stdin>", 2, 5, "did you mean 'global'?")
    usage = run_subprocess("show", "-e", "causal")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr and "--seq-len" in usage.stderr


# ------------------------------------------------------------------ compile --emit, check
def test_emit_to_stdout_is_the_cached_kernel_module(capsys):
    code, out, err = run(capsys, "compile", "-e", "global(first) + window(5) & causal", "-n", "300", "--emit", "-")
    assert code == 0 and "pattern   causal & window(5) + global(0)" in err  # the report goes to stderr
    src = emit.generate(patternc.parse("global(first) + window(5) & causal").optimized)
    assert out.startswith("# pattern: causal & window(5) + global(0)\n") and out.endswith(src.text)
    # the optimized tree: causal & window(5) is one band, window(left=2, right=0)
    assert "# PARAMS at q_len=300, kv_len=300: [0, 1, 2, 0]" in out
    assert "def pattern_mask(" in out and "patternc/kernels/flash.py" in out
    compile(out, "<emitted>", "exec")  # valid Python


def test_emit_to_directory(capsys, tmp_path):
    code, out, _ = run(capsys, "compile", REPO / "examples" / "lecture.attn", "-n", "1024", "--emit", tmp_path / "k")
    (path,) = (tmp_path / "k").iterdir()
    assert code == 0 and f"kernel    {path}" in out and "def pattern_mask(" in path.read_text()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_check_on_cpu_passes_and_prints_the_table(capsys, dtype):
    code, out, err = run(capsys, "check", "-e", "global(eos) + window(left=9, right=0) + random(1, block=16)",
                         "-n", "40", "--kv-len", "50", "--head-dim", "16", "--heads", "4", "--kv-heads", "2",
                         "--block-m", "16", "--block-n", "16", "--dtype", dtype, "--device", "cpu", "--seed", "3")
    assert code == 0, out + err
    rows = re.findall(r"^(O|dQ|dK|dV)\s+(\S+)\s+(\S+)\s+(\S+)\s+yes$", out, re.M)
    assert [r[0] for r in rows] == ["O", "dQ", "dK", "dV"] and "--seed 3" in out
    assert all(float(r[2]) <= float(r[3]) for r in rows)


def test_check_fails_with_status_1_when_kernels_are_wrong(capsys, monkeypatch):
    real = patternc.golden.attention_from

    def off_by_a_bit(pattern, **options):
        attn = real(pattern, **options)
        return lambda q, k, v: attn(q, k, v) * 1.01

    monkeypatch.setattr(patternc.golden, "attention_from", off_by_a_bit)
    code, out, _ = run(capsys, "check", "-e", "window(3)", "-n", "20", "--head-dim", "16", "--dtype", "float32",
                       "--device", "cpu", "--block-m", "16", "--block-n", "16")
    assert code == 1 and re.search(r"^O\s.*NO$", out, re.M)


@pytest.mark.parametrize(
    "argv,fragment",
    [(["--dtype", "bfloat16", "--device", "cpu"], "bfloat16 cannot be checked on the CPU"),
     (["--block-m", "24", "--device", "cpu"], "--block-m: expected a power of two from 16 to 256"),
     (["--heads", "3", "--kv-heads", "2", "--device", "cpu"], "not a multiple of k's 2 heads")],
)
def test_check_bad_options_exit_2(capsys, argv, fragment):
    code, _, err = run(capsys, "check", "-e", "window(3)", "-n", "16", "--head-dim", "16", *argv)
    assert code == 2 and fragment in err


def test_internal_errors_are_one_line(capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(patternc.cli, "_cmd_show", boom)
    monkeypatch.setattr(patternc.cli, "build_parser", _parser_with_show(boom))
    code, _, err = run(capsys, "show", "-e", "window(3)", "-n", "4")
    assert code == 2 and err.startswith("patternc: internal error: RuntimeError: simulated bug")


def _parser_with_show(run_fn):
    def build():
        parser = build_parser()
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        sub.choices["show"].set_defaults(run=run_fn)
        return parser

    return build


# ------------------------------------------------------------------ hostile environments and values
@pytest.mark.parametrize("argv,fragment", [
    (["compile", "-e", "causal", "-n", "2147483647"], "expected a length up to 2**30"),
    (["compile", "-e", "causal", "-n", "64", "--kv-len", "4294967296"], "expected a length up to 2**30"),
    (["compile", "-e", "causal", "-n", "64", "--block-m", "7"], "power of two from 16 to 256"),
    (["compile", "-e", "causal", "-n", "64", "--block-m", "100000"], "power of two from 16 to 256"),
    (["compile", "-e", "causal", "-n", "64", "--block-m", "131072"], "power of two from 16 to 256"),
    (["check", "-e", "causal", "--seed", "99999999999999999999"], "expected an integer from 0 to 2**63 - 1"),
    (["check", "-e", "causal", "--seed", "-1"], "expected an integer from 0 to 2**63 - 1"),
])
def test_out_of_range_values_are_usage_errors(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2 and fragment in err and "internal error" not in err


def test_closed_stdin_and_full_disk_are_clear_errors():
    closed = subprocess.run([sys.executable, "-m", "patternc", "compile", "-", "-n", "64"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=120)
    assert closed.returncode == 2 and "empty pattern" in closed.stderr
    shut = subprocess.run(["sh", "-c", f"{sys.executable} -m patternc compile - -n 64 <&-"],
                          capture_output=True, text=True, timeout=120)
    assert shut.returncode == 2 and "standard input: it is closed" in shut.stderr, shut.stderr
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, "-m", "patternc", "show", "-e", "causal", "-n", "8"],
                                    stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
        assert result.returncode == 2 and "No space left on device" in result.stderr
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_stdin_bytes_order_mark_and_binary():
    def run_stdin(data):
        return subprocess.run([sys.executable, "-m", "patternc", "compile", "-", "-n", "64"], input=data,
                              capture_output=True, timeout=120)

    bom = run_stdin(b"\xef\xbb\xbfwindow(3)\n")
    assert bom.returncode == 0 and b"window(3)" in bom.stdout
    binary = run_stdin(b"window(3) + \xff\xfe")
    assert binary.returncode == 2 and b"standard input is not UTF-8 text (byte 12)" in binary.stderr
    assert b"\\udc" not in binary.stderr and b"Traceback" not in binary.stderr


def test_emit_never_overwrites_another_patterns_file(capsys, tmp_path):
    assert run(capsys, "compile", "-e", "window(5)", "-n", 64, "--emit", tmp_path)[0] == 0
    assert run(capsys, "compile", "-e", "window(5)", "-n", 64, "--emit", tmp_path)[0] == 0  # the same file again
    code, _, err = run(capsys, "compile", "-e", "window(7)", "-n", 64, "--emit", tmp_path)  # same structure
    assert code == 2 and "already holds the kernel of another pattern" in err
    (path,) = tmp_path.iterdir()
    assert "# pattern: window(5)" in path.read_text()


def bench_rows(out):
    """`bench`'s markdown table as {method: {column: cell}}."""
    lines = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in out.splitlines()
             if line.startswith("| ") and not line.startswith("|---")]
    header, *body = lines
    return {cells[0]: dict(zip(header, cells)) for cells in body}


def test_bench_times_every_method_after_checking_it(capsys):
    # rows past 46 attend nothing: SDPA's NaN rows are compared as patternc's zeros (its
    # gradients, were they NaN, would not be compared, and the check would say so)
    code, out, _ = run(capsys, "bench", "-e", "window(left=7, right=0) & global(0:40)", "-n", 96,
                           "--batch", 1, "--heads", 2, "--kv-heads", 1, "--head-dim", 16, "--seconds", 0.05)
    assert code == 0, out
    rows = bench_rows(out)
    assert set(rows) >= {"patternc", "sdpa-mask", "flex"}
    assert rows["patternc"]["check"] == "reference" and rows["sdpa-mask"]["check"].startswith("ok ")
    for method in ("patternc", "sdpa-mask"):
        for column in ("build ms", "first call s", "fwd ms", "fwd+bwd ms"):
            assert float(rows[method][column]) > 0, (method, column)
        assert rows[method]["peak MiB"] == "-"  # CPU: no allocator statistics
    assert "skipped" in rows["flex"]["check"] and "Hkv=1" in out and "density" in out


def test_bench_times_sdpa_kernels_on_dense_patterns(capsys):
    code, out, _ = run(capsys, "bench", "-e", "causal", "-n", 80, "--batch", 1, "--heads", 2, "--head-dim", 16,
                           "--dtype", "float32", "--device", "cpu", "--seconds", 0.02)
    rows = bench_rows(out)
    # causal rows all attend something: outputs and gradients compared
    assert code == 0 and rows["sdpa-math"]["check"].startswith("ok ") and rows["sdpa-mask"]["check"].startswith("ok ")
    assert "NaN" not in out, out


def test_bench_check_catches_a_wrong_method(capsys, monkeypatch):
    """The check can fail: a method whose gradients (only) are wrong reads DIFFERS."""
    from patternc import bench

    methods = bench._methods

    def with_wrong_grads(pattern, q, k, v):
        for name, fn, *rest in methods(pattern, q, k, v):
            if name == "sdpa-mask":
                inner = fn
                fn = lambda: _ScaledGrad.apply(inner())  # noqa: E731
            yield (name, fn, *rest)

    monkeypatch.setattr(bench, "_methods", with_wrong_grads)
    code, out, _ = run(capsys, "bench", "-e", "causal", "-n", 64, "--batch", 1, "--heads", 1, "--head-dim", 16,
                       "--dtype", "float32", "--device", "cpu", "--seconds", 0.01)
    assert code == 0 and bench_rows(out)["sdpa-mask"]["check"].startswith("DIFFERS"), out


class _ScaledGrad(torch.autograd.Function):
    """Identity forward, gradient times 1.5: right outputs, wrong gradients."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return 1.5 * g


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_bench_on_a_missing_gpu_is_a_clear_error(capsys):
    code, _, err = run(capsys, "bench", "-e", "causal", "-n", 64, "--device", "cuda")
    assert code == 2 and "no CUDA device" in err
