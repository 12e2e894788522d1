"""The architecture's promises: one-way imports, no Triton at import, the interpreter chosen
per call, codegen and plan units, and the explicit query offset end to end."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest
import torch

import patternc
from helpers import PATTERNS, block_classes, dense_attention, rel_err, run_case
from patternc.kernels import emit
from patternc.errors import PatterncError
from patternc.plan import (BWD_WARP_SPECIALIZED, WARP_SPECIALIZED, KernelPlan, Schedule, check_options, choose_tiles, plan_for,
                           long_rows, tiles_and_layout)

PACKAGE = Path(patternc.__file__).parent
REPO = PACKAGE.parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree):
    """Every node, except those under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports(path: Path):
    """(module imported, names) of every run-time import in a module, as absolute names."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            yield target, tuple(a.name for a in node.names)


def _graph():
    graph = nx.DiGraph()
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if p.name != "flash.py"}
    for name, path in modules.items():
        graph.add_node(name)
        for target, names in _imports(path):
            if not target.startswith("patternc"):
                continue
            # `from .pkg import module` imports a module; `from .pkg import name` the package
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            for dep in subs or [target]:
                if dep != name:
                    graph.add_edge(name, dep)
    return graph, modules


def test_imports_flow_one_way_and_nothing_imports_the_package_root():
    graph, _ = _graph()
    assert nx.is_directed_acyclic_graph(graph), nx.find_cycle(graph)
    assert not [m for m in graph.predecessors("patternc") if m != "patternc.__main__"]
    packages = nx.DiGraph((a.split(".")[1], b.split(".")[1]) for a, b in graph.edges
                          if a.count(".") and b.count(".") and a.split(".")[1] != b.split(".")[1])
    assert nx.is_directed_acyclic_graph(packages), nx.find_cycle(packages)


def test_only_kernel_code_imports_triton_and_lang_is_free_of_it():
    _, modules = _graph()
    importers = {name for name, path in modules.items() for target, _ in _imports(path) if target.startswith("triton")}
    assert importers <= {"patternc.kernels.cache", "patternc.kernels.parallel", "patternc.kernels.prepared",
                         "patternc.kernels.hopper"}, importers  # hopper.py: Gluon kernels, imported by cache


def _python(code: str, **env):
    full = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    full.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


def test_import_and_reference_path_work_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"  # `import triton` now raises ImportError
            "import torch, patternc\n"
            "q = torch.randn(1, 2, 40, 8)\n"
            "out = patternc.attention_from('global(first) + window(5)')(q, q, q)\n"
            "print(out.shape, patternc.parse('causal').layout(64, block_m=16, block_n=16).num_listed)\n"
            "try:\n"
            "    patternc.attention_from('causal', backend='kernels')(q, q, q)\n"
            "except patternc.PatterncError as e:\n"
            "    print('clear error:', e)\n")
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert "torch.Size([1, 2, 40, 8]) 10" in result.stdout and "clear error: the kernels need Triton" in result.stdout


def test_check_on_cpu_in_a_fresh_shell():
    """Regression: `check --device cpu` without TRITON_INTERPRET set beforehand."""
    result = subprocess.run([sys.executable, "-m", "patternc", "check", "-e", "window(3)", "--seq-len", "64",
                             "--device", "cpu", "--head-dim", "16", "--seed", "1"],
                            capture_output=True, text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" yes") == 4


def test_mixing_modes_in_one_process_is_a_clear_error():
    code = ("import triton, torch, patternc\n"  # triton imported compiled, then CPU kernels asked for
            "q = torch.randn(1, 1, 32, 16)\n"
            "try:\n"
            "    patternc.attention_from('causal', backend='kernels')(q, q, q)\n"
            "except patternc.PatterncError as e:\n"
            "    print('clear error:', e)\n")
    result = _python(code)
    assert result.returncode == 0 and "clear error: CPU tensors need Triton's interpreter" in result.stdout, result


def test_interpreter_without_numpy_is_a_clear_error_and_the_rest_works():
    """Triton's interpreter imports numpy; patternc without numpy still compiles patterns and runs
    the reference path, and the kernels on CPU tensors say what to install."""
    code = ("import sys; sys.modules['numpy'] = None\n"  # `import numpy` now raises ImportError
            "import torch, patternc\n"
            "from patternc.cli import main\n"
            "q = torch.randn(1, 1, 16, 8)\n"
            "print(patternc.attention_from('causal', backend='reference')(q, q, q).shape)\n"
            "try:\n"
            "    patternc.attention_from('causal', backend='kernels')(q, q, q)\n"
            "except patternc.PatterncError as e:\n"
            "    print('clear error:', e)\n"
            "print('exit', main(['compile', '-e', 'window(3)', '-n', '64']))\n"
            "print('exit', main(['check', '-e', 'window(3)', '-n', '16', '--device', 'cpu', '--head-dim', '8']))\n")
    result = _python(code, TRITON_INTERPRET="1")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "clear error: Triton's interpreter (the kernels on CPU tensors) needs numpy" in result.stdout
    assert result.stdout.count("exit 0") == 1 and result.stdout.count("exit 2") == 1, result.stdout
    assert "patternc[interpreter]" in result.stderr  # check's error


def test_interpreter_with_numpy_too_new_for_triton_is_a_clear_error(monkeypatch):
    import numpy
    import triton

    q = torch.randn(1, 1, 16, 16)
    attn = patternc.attention_from("causal", backend="kernels")
    monkeypatch.setattr(numpy, "__version__", "2.4.0rc1")
    monkeypatch.setattr(triton, "__version__", "3.6.0+git1a2b")
    with pytest.raises(patternc.PatterncError, match=r"fails with numpy 2.4.0rc1 \(it needs numpy < 2.4"):
        attn(q, q, q)
    monkeypatch.setattr(numpy, "__version__", "2.3.5")
    assert attn(q, q, q).shape == q.shape
    monkeypatch.setattr(numpy, "__version__", "10.0")
    monkeypatch.setattr(triton, "__version__", "3.7.0")  # #9171 is fixed on Triton main after the 3.6 release
    assert attn(q, q, q).shape == q.shape


# ------------------------------------------------------------------------ codegen
def test_codegen_guards_each_top_level_term_by_its_tag_bit():
    root = patternc.parse("global(first, eos) + window(3) + random(2)").optimized
    src = emit.generate(root)
    assert [f"if (TAGS & {1 << t}) != 0:" in src.text for t in range(3)] == [True] * 3
    atom = emit.generate(patternc.parse("window(5)").optimized)
    assert "TAGS &" not in atom.text and "return m" in atom.text
    compile(src.text, "<generated>", "exec")
    # live terms (`BlockLayout.partial_terms`): the others' code is left out, their PARAMS slots stay
    two = emit.generate(root, 0b101)
    assert two.tagged and "if (TAGS & 2)" not in two.text and "term 1: random: partial on no tile" in two.text
    one = emit.generate(root, 0b100)
    assert not one.tagged and "TAGS &" not in one.text and one.scalars == src.scalars and one.digest != src.digest
    reads = {int(x) for x in __import__("re").findall(r"tl\.load\(PARAMS \+ (\d+)\)", one.text)}
    assert reads and reads < set(range(src.scalars))  # the window's own slots, where the full module reads them
    compile(one.text, "<generated>", "exec")


@pytest.mark.parametrize("text", PATTERNS)
def test_params_fill_exactly_the_slots_the_code_reads(text):
    p = patternc.parse(text)
    ctx = p.resolve(70, 50, optimized=True)
    src = emit.generate(ctx.root)
    values = emit.params(ctx)
    reads = {int(x) for x in __import__("re").findall(r"tl\.load\(PARAMS \+ (\d+)\)", src.text)}
    assert reads == set(range(src.scalars)) and values.dtype == torch.int32
    assert emit.params(ctx) is not values and torch.equal(emit.params(ctx), values)  # fresh, never shared


def test_values_never_reach_the_source():
    a = emit.generate(patternc.parse("global(7:9) + window(left=123, right=45) & causal").optimized)
    b = emit.generate(patternc.parse("global(1:2) + window(left=999, right=0) & causal").optimized)
    assert a.text == b.text and "123" not in a.text and "999" not in a.text


# --------------------------------------------------------------------------- plan
def test_tile_options_apply_to_both_passes_and_prefixed_ones_to_one():
    fwd, bwd = choose_tiles("cuda", torch.bfloat16, 64, {"block_n": 32, "bwd_block_m": 128, "fwd_num_warps": 8})
    assert (fwd.block_m, fwd.block_n, fwd.num_warps) == (64, 32, 8)
    assert (bwd.block_m, bwd.block_n, bwd.num_warps) == (128, 32, 4)


def test_forward_registers_are_capped_for_three_programs_per_multiprocessor_at_small_head_dims():
    for head_dim, cap in ((32, 168), (64, 168), (80, 0), (128, 0)):
        fwd, bwd = choose_tiles("cuda", torch.bfloat16, head_dim)
        assert (fwd.max_registers, bwd.max_registers) == (cap, 0)
    options = check_options({"fwd_max_registers": 0, "bwd_max_registers": 200})  # 0: the compiler's choice
    fwd, bwd = choose_tiles("cuda", torch.float16, 64, options)
    assert (fwd.max_registers, bwd.max_registers) == (0, 200)
    assert choose_tiles("cpu", torch.float32, 64)[0].max_registers == 0
    assert choose_tiles("cuda", torch.float32, 64)[0].max_registers == 0  # other tiles
    assert choose_tiles("cuda", torch.bfloat16, 64, {"fwd_block_m": 128})[0].max_registers == 0  # sized for 64x64
    assert choose_tiles("cuda", torch.bfloat16, 64, {"bwd_num_warps": 8})[0].max_registers == 168
    with pytest.raises(PatterncError, match="fwd_max_registers must be 0"):
        check_options({"fwd_max_registers": 300})
    with pytest.raises(PatterncError, match="max_registers must be an integer >= 0"):
        check_options({"max_registers": -1})


@pytest.mark.parametrize("text,n,options,tile", [
    ("causal", 16384, {}, (128, 128, 4, 1)),  # one term, 0.8% of its 64x64 tiles partial: warp-specialized
    ("all", 8192, {}, (128, 128, 4, 1)),
    ("all", 4096, {}, (128, 128, 4, 1)),  # 64 query blocks of 64 tiles
    ("all", 1024, {}, (64, 64, 4, 0)),  # 16 query blocks
    ("window(left=1023, right=0)", 16384, {}, (128, 128, 4, 1)),  # rows of 17 tiles: persistent
    ("window(left=1023, right=0)", 4096, {}, (128, 128, 4, 1)),  # 64 query blocks
    ("window(left=1023, right=0)", 16384, {"fwd_persistent": 0}, (128, 128, 4, 1)),  # one item per program
    ("window(left=1023, right=0)", 1024, {}, (64, 64, 4, 0)),  # 16 query blocks
    ("causal", 64 * 1024 + 16, {}, (128, 128, 4, 1)),
    ("causal", 4096, {}, (128, 128, 4, 1)),  # 3% partial
    ("(global(0:4) + window(left=4095, right=0)) & causal", 16384, {}, (128, 128, 4, 1)),  # 3% partial, two terms
    ("causal", 16384, {"num_stages": 2}, (64, 64, 4, 0)),  # a forward option: the options decide
    ("causal", 16384, {"fwd_warp_specialize": 0}, (64, 64, 4, 0)),
    ("causal", 16384, {"bwd_block_m": 32}, (128, 128, 4, 1)),
    ("causal", 16384, {"max_registers": 0}, (128, 128, 4, 1)),  # a register cap is not a tile setting
    ("causal", 16384, {"fwd_max_registers": 200}, (128, 128, 8, 0)),  # but the warp-specialized tile takes none
])
def test_bigger_forward_tiles_where_rows_are_long(text, n, options, tile):
    pattern = patternc.parse(text)
    fwd, bwd, lay = tiles_and_layout(lambda m, b: pattern.layout(n, n, m, b), "cuda", torch.bfloat16, 128, options,
                                     specializable=True)
    assert (fwd.block_m, fwd.block_n, fwd.num_warps, fwd.warp_specialize) == tile
    uniform = fwd.warp_specialize and not options and text == "window(left=1023, right=0)"
    assert fwd.persistent == uniform  # rows of (nearly) one length: persistent programs
    assert (lay.block_m, lay.block_n) == tile[:2]
    if not options:  # D=64 keeps 64x64 tiles, and so does a GPU older than Hopper
        for head_dim, hopper in ((64, True), (128, False)):
            fwd, _, _ = tiles_and_layout(lambda m, b: pattern.layout(n, n, m, b), "cuda", torch.bfloat16, head_dim,
                                         hopper=hopper, specializable=hopper)
            assert (fwd.block_m, fwd.block_n, fwd.warp_specialize) == (64, 64, 0)
    # the fused backward where rows are long (not P3's uniform ones), unless options set the backward
    fused = long_rows(pattern.layout(n, n, 64, 64)) and all(k.startswith("fwd_") or k.endswith("max_registers") and not v
                                                             for k, v in options.items())
    assert (bwd.block_m, bwd.block_n, bwd.warp_specialize) == ((64, 128, 1) if fused else
                                                               (options.get("bwd_block_m", 64), 64, 0))


ONLY_128 = "fwd_warp_specialize runs only at head dim 128"
BWD_ONLY_128 = "bwd_warp_specialize runs only at head dim 128"


@pytest.mark.parametrize("options,dtype,head_dim,error", [
    ({"fwd_warp_specialize": 1, "fwd_block_m": 64}, torch.bfloat16, 128, ONLY_128),
    ({"fwd_warp_specialize": 1, "fwd_num_warps": 8}, torch.bfloat16, 128, ONLY_128),
    ({"fwd_warp_specialize": 1}, torch.float32, 128, ONLY_128),
    ({"fwd_warp_specialize": 1}, torch.float16, 64, ONLY_128),
    ({"fwd_persistent": 1}, torch.bfloat16, 128, "fwd_persistent needs fwd_warp_specialize"),
    ({"bwd_warp_specialize": 1, "bwd_block_n": 64}, torch.bfloat16, 128, BWD_ONLY_128),
    ({"bwd_warp_specialize": 1, "max_registers": 200}, torch.bfloat16, 128, BWD_ONLY_128),
    ({"bwd_warp_specialize": 1}, torch.float32, 128, BWD_ONLY_128),
    ({"bwd_warp_specialize": 1}, torch.float16, 64, BWD_ONLY_128),
])
def test_warp_specialized_kernels_only_where_they_run(options, dtype, head_dim, error):
    with pytest.raises(PatterncError, match=error):
        choose_tiles("cuda", dtype, head_dim, options)
    assert choose_tiles("cuda", torch.bfloat16, 128, {"fwd_warp_specialize": 1})[0] == WARP_SPECIALIZED
    assert choose_tiles("cuda", torch.bfloat16, 128, {"bwd_warp_specialize": 1})[1] == BWD_WARP_SPECIALIZED
    cpu_fwd, cpu_bwd = choose_tiles("cpu", dtype, head_dim, options)  # the interpreter runs any tile
    assert (cpu_fwd.warp_specialize, cpu_fwd.persistent, cpu_bwd.warp_specialize) == (
        options.get("fwd_warp_specialize", 0), options.get("fwd_persistent", 0), options.get("bwd_warp_specialize", 0))
    causal = patternc.parse("causal")
    with pytest.raises(PatterncError, match="needs a Hopper GPU"):
        tiles_and_layout(lambda m, b: causal.layout(4096, 4096, m, b), "cuda", torch.bfloat16, 128,
                         {"fwd_warp_specialize": 1}, hopper=False)
    with pytest.raises(PatterncError, match="needs an sm_90 GPU and Triton 3.6"):  # sm_100, or another Triton
        tiles_and_layout(lambda m, b: causal.layout(4096, 4096, m, b), "cuda", torch.bfloat16, 128,
                         {"fwd_warp_specialize": 1}, specializable=False)
    with pytest.raises(PatterncError, match="bwd_warp_specialize needs an sm_90 GPU and Triton 3.6"):
        tiles_and_layout(lambda m, b: causal.layout(4096, 4096, m, b), "cuda", torch.bfloat16, 128,
                         {"bwd_warp_specialize": 1}, specializable=False)
    fwd, _, _ = tiles_and_layout(lambda m, b: causal.layout(16384, 16384, m, b), "cuda", torch.bfloat16, 128, {},
                                 specializable=False)
    assert (fwd.block_m, fwd.num_warps, fwd.warp_specialize) == (128, 8, 0)  # the dense tile of the plain loops


def test_gluon_forward_only_on_the_triton_it_is_written_for(monkeypatch):
    """Gluon's API changes between Triton releases: hopper.py is offered on 3.6 only."""
    import triton

    from patternc.kernels import cache

    assert cache.hopper_supported() == (triton.__version__.startswith("3.6"))
    monkeypatch.setattr(triton, "__version__", "3.9.0")
    assert not cache.hopper_supported()
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    assert cache.hopper_supported()


def test_persistent_option_needs_the_warp_specialized_forward():
    with pytest.raises(PatterncError, match="fwd_persistent=1 needs fwd_warp_specialize=1"):
        check_options({"fwd_persistent": 1})
    assert check_options({"fwd_persistent": 1, "fwd_warp_specialize": 1}) and check_options({"fwd_persistent": 0})
    p3 = patternc.parse("window(left=1023, right=0)")  # GQA keeps its packed 64x64 forward
    fwd, _, _ = tiles_and_layout(lambda m, b: p3.layout(16384, 16384, m, b), "cuda", torch.bfloat16, 128, {},
                                 group=4, specializable=True)
    assert (fwd.block_m, fwd.warp_specialize, fwd.persistent) == (64, 0, 0)


def test_schedule_takes_heavy_blocks_first_and_the_rest_in_order():
    counts = torch.tensor([100] + [3] * 20 + [120])  # 4x the mean is 50.9: blocks 21 and 0 are heavy
    schedule = Schedule.of(counts)
    assert schedule.order.tolist() == [21, 0] + list(range(1, 21)) and schedule.heavy == 2
    assert Schedule.of(torch.tensor([1, 2, 3, 4])).heavy == 0  # causal-like rows: index order kept
    p1 = patternc.parse("global(first, eos) + window(3) + random(2, block=128)")
    plan = plan_for(p1, 4096, 4096, None, torch.device("cpu"), torch.float32, 32)
    assert sorted(plan.fwd_schedule.order[:plan.fwd_schedule.heavy].tolist()) == [0, 4096 // 32 - 1]
    assert sorted(plan.dkdv_schedule.order[:plan.dkdv_schedule.heavy].tolist()) == [0, 4096 // 32 - 1]


def test_plan_layouts_are_at_the_kernel_tiles():
    plan = plan_for(patternc.parse("window(left=40, right=0)"), 100, 100, None, torch.device("cpu"),
                    torch.float32, 32, {"fwd_block_m": 32, "bwd_block_n": 16, "block_n": 32})
    assert isinstance(plan, KernelPlan) and plan.q_offset == 0 and plan.interpret
    assert (plan.fwd_layout.block_m, plan.fwd_layout.block_n) == (plan.fwd.block_m, plan.fwd.block_n) == (32, 32)
    assert (plan.bwd_layout.block_m, plan.bwd_layout.block_n) == (plan.bwd.block_m, plan.bwd.block_n) == (32, 16)
    assert "forward  32x32 tiles" in str(plan)


@pytest.mark.parametrize("kwargs,message", [
    (dict(q_len=2**30, kv_len=2**30, q_offset=None), "int32 positions"),
    (dict(q_len=64, kv_len=64, q_offset=2**31 - 100), "int32 positions"),
])
def test_plan_refuses_lengths_the_kernels_cannot_index(kwargs, message):
    with pytest.raises(patternc.PatterncError, match=message):
        plan_for(patternc.parse("causal"), device=torch.device("cuda"), dtype=torch.float16, head_dim=64, **kwargs)


def test_bf16_on_the_interpreter_is_refused():
    q = torch.randn(1, 1, 16, 16, dtype=torch.bfloat16)
    with pytest.raises(patternc.PatterncError, match="bfloat16 kernels cannot run on the CPU"):
        patternc.attention_from("causal", backend="kernels")(q, q, q)


# ------------------------------------------------------------------ query offset
@pytest.mark.parametrize("text", PATTERNS)
def test_a_query_attends_the_same_keys_in_a_full_pass_and_a_decode_step(text):
    p = patternc.parse(text)
    lk = 70
    try:
        full = p.dense_mask(lk, lk)
    except patternc.PatterncError:  # a global index out of range for these lengths
        return
    for lq in (1, 16, 33):
        assert torch.equal(p.dense_mask(lq, lk), full[lk - lq:])
    for offset, lq in ((0, 10), (17, 9), (60, 10)):
        assert torch.equal(p.dense_mask(lq, lk, q_offset=offset), full[offset:offset + lq])


@pytest.mark.parametrize("text", PATTERNS)
def test_layouts_with_a_query_offset_are_exact(text):
    p = patternc.parse(text)
    for lq, lk, offset in ((20, 70, 3), (33, 40, -5), (9, 50, 45)):
        try:
            mask = p.dense_mask(lq, lk, q_offset=offset)
        except patternc.PatterncError:
            continue
        lay = p.layout(lq, lk, 8, 16, q_offset=offset)
        assert torch.equal(lay.to_dense(), block_classes(mask, 8, 16)), (text, lq, lk, offset)


@pytest.mark.parametrize("q_offset", [0, 13, 41])
def test_kernels_honour_an_explicit_query_offset(q_offset):
    run_case("global(first) + window(left=6, right=2) + random(2, block=8)", lq=24, lk=70, q_offset=q_offset)


def test_decode_steps_match_the_full_forward():
    p = "global(first, eos) + window(5) + random(2, block=8)"
    attn = patternc.attention_from(p, backend="kernels", block_m=16, block_n=16)
    q, k, v = (torch.randn(1, 2, 70, 16) for _ in range(3))
    full = attn(q, k, v)
    for lo, hi in ((69, 70), (54, 70), (10, 26)):
        step = attn(q[:, :, lo:hi], k, v, q_offset=lo)
        assert rel_err(step, full[:, :, lo:hi]) < 1e-5
    ref, _ = dense_attention(q, k, v, patternc.parse(p).dense_mask(70, 70), 16 ** -0.5)
    assert rel_err(full, ref) < 1e-5


def test_concurrent_calls_on_the_interpreter_are_safe():
    """Two threads calling one module in Triton's interpreter (which is not thread-safe)."""
    import threading

    attn = patternc.attention_from("global(first) + window(5)", backend="kernels", block_m=16, block_n=16)
    inputs = [tuple(torch.randn(1, 2, 48, 16) for _ in range(3)) for _ in range(4)]
    expected = [attn(*x) for x in inputs]
    results, errors = [None] * 4, []

    def work(n):
        try:
            results[n] = attn(*inputs[n])
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(torch.equal(r, e) for r, e in zip(results, expected))


@pytest.mark.parametrize("d", [0, 257])
def test_head_dims_out_of_range_are_clear_errors_on_every_path(d):
    q = torch.randn(1, 1, 8, d)
    for call in (lambda: patternc.attention_from("causal")(q, q, q),
                 lambda: patternc.reference_attention(q, q, q, "causal")):
        with pytest.raises(patternc.PatterncError, match=f"q has head dim {d}; head dims from 1 to 256"):
            call()


@pytest.mark.parametrize("backend", ["kernels", "reference"])
def test_no_keys_gives_zero_rows(backend):
    """Lk = 0: every row attends nothing, so outputs are 0 and the log-sum-exp -inf (as for
    rows that attend nothing), on every path."""
    q = torch.randn(1, 2, 5, 16, requires_grad=True)
    k = v = torch.randn(1, 2, 0, 16)
    out, lse = patternc.attention_from("causal", backend=backend)(q, k, v, return_lse=True)
    assert out.shape == q.shape and (out == 0).all() and torch.isneginf(lse).all()
    assert (patternc.reference_attention(q, k, v, "causal") == 0).all()


def test_decoding_keeps_the_small_forward_tiles():
    """16 queries against 64K keys: one long row of full tiles, but no rows to fill a bigger tile."""
    pattern = patternc.parse("causal")
    fwd, _, lay = tiles_and_layout(lambda m, n: pattern.layout(16, 65536, m, n), "cuda", torch.bfloat16, 128, {}, 4)
    assert (fwd.block_m, fwd.block_n, lay.block_m) == (64, 64, 16)  # 4 heads packed: 16 queries of each


def test_deterministic_mode_keeps_the_plain_backward():
    """The fused backward's dQ sums arrive in no fixed order: not under
    `torch.use_deterministic_algorithms`, which the plan cache keys on."""
    causal = patternc.parse("causal")
    layout_at = lambda m, b: causal.layout(16384, 16384, m, b)  # noqa: E731
    for deterministic, fused in ((False, 1), (True, 0)):
        fwd, bwd, _ = tiles_and_layout(layout_at, "cuda", torch.bfloat16, 128, {}, specializable=True,
                                       deterministic=deterministic)
        assert (fwd.warp_specialize, bwd.warp_specialize) == (1, fused)
    torch.use_deterministic_algorithms(True)
    try:
        plan = plan_for(causal, 64, 64, None, torch.device("cpu"), torch.float32, 32, {})
    finally:
        torch.use_deterministic_algorithms(False)
    assert plan is not plan_for(causal, 64, 64, None, torch.device("cpu"), torch.float32, 32, {})
