"""The benchmark patterns of issue 8 by name, and the GPU warm-up before timing: one place for
every script in this folder."""

import os

# The scripts here time the plans' own kernels from their first call on, not the interim ones a new
# structure's first calls run while those compile (patternc.ops.launch._compiling); run.py and
# first_call.py, which measure first calls as users get them, turn that back on.
os.environ.setdefault("PATTERNC_INTERIM", "0")

PATTERNS = {
    "P1": "global(first, eos) + window(3) + random(2, block=128)",
    "P2": "global(0:128) + window(193) + random(3, block=128)",
    "P3": "window(left=1023, right=0)",
    "P4": "(global(0:4) + window(left=4095, right=0)) & causal",
    "causal": "causal",
    "all": "all",
}


def warm_gpu(seconds: float = 0.3) -> None:
    """Busy the GPU with matmuls for a moment before timing: after seconds of compiling, an
    idle GPU's clocks are down, and the first row timed read up to 50% slow (P1 4K forward
    0.28 vs 0.18 ms: results/2026-11-26-ab-v8-stages2-h200.md, -v8-h200-bench.md)."""
    import time

    import torch

    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ a
        torch.cuda.synchronize()


def warm_call(fn, seconds: float = 0.5) -> None:
    """Call ``fn`` for a moment before timing it: in the first second or so after a structure's
    compile, a call's CPU cost read up to 3x its steady value (P1 at 4K: 0.28 then 0.095 ms per
    forward, on an H100 host), and a 4K row, whose GPU work is ~0.1 ms, timed that instead
    (P2 GQA 4K forward 0.121-0.471 ms across runs: results/2026-11-26-v10-h100-bench.md,
    -v10b-, -v10c-). Not investigated further; the steady state is what the tables report.
    First waits for any kernels patternc is compiling in child processes (a new structure's first
    calls run its plan's interim kernels meanwhile)."""
    import sys
    import time

    import torch

    parallel = sys.modules.get("patternc.kernels.parallel")
    if parallel is not None:  # a first call ran patternc's interim kernels: its own are compiling in children
        parallel.wait()
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
    torch.cuda.synchronize()


def compile_for_sm90() -> None:
    """Make Triton's JIT compile for an H100/H200 (sm_90) on a machine without a GPU: a stand-in
    driver names the target for warm-ups (`kernel.warmup(..., grid=...)`); nothing can launch."""
    import torch
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver

    class Target:  # what Triton's JIT asks the driver for while it compiles (no launch)
        get_current_target = staticmethod(lambda: GPUTarget("cuda", 90, 32))
        get_current_device = staticmethod(lambda: 0)
        get_current_stream = staticmethod(lambda device=None: 0)
        get_device_interface = staticmethod(lambda: torch.cuda)

    driver.set_active(Target())


def cubin_resources(kernel) -> str:
    """Registers and stack (spills) per thread of a compiled Triton kernel, from its cubin
    (Triton's cuobjdump): what `n_regs` says without a GPU to load the kernel on."""
    import re
    import subprocess
    import tempfile

    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(kernel.asm["cubin"])
        f.flush()
        usage = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", f.name],
                               capture_output=True, text=True).stdout
    found = dict(re.findall(r"(REG|STACK):(\d+)", usage))
    return f"regs {found.get('REG', '?')} stack {found.get('STACK', '?')}"
