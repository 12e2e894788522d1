"""`patternc.kernels.parallel`: kernels compiled in forked children through Triton's async-compile
hook. Here with stand-in compile functions (a CPU machine compiles nothing); tests/test_gpu.py
checks the real thing (the backward's kernels in Triton's cache before the backward runs)."""

import contextlib
import os
import time

import threading

import pytest
import torch

import patternc
from patternc.kernels import parallel

_async_compile = pytest.importorskip("triton.runtime._async_compile")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")


def _writer(path, text="compiled", delay=0.0):
    def compile_fn():
        time.sleep(delay)
        path.write_text(text)
    return compile_fn


def test_each_kernel_compiles_once_in_a_child(tmp_path):
    a, b = (str(tmp_path / name) for name in "ab")  # keys: Triton's cache keys, here fresh paths
    with parallel.forking():
        mode = _async_compile.active_mode.get()
        assert mode is not None
        for key in (a, b, a):  # a key submitted twice (two launches of one kernel): one child
            assert mode.submit(key, _writer(tmp_path / key, delay=1.0), None) is None
        assert parallel.pending() == 2
    assert _async_compile.active_mode.get() is None  # Triton compiles in-process again
    assert not (tmp_path / a).exists()  # nothing waited for yet: the children are still compiling
    parallel.wait()
    assert parallel.pending() == 0
    assert (tmp_path / a).read_text() == (tmp_path / b).read_text() == "compiled"
    with parallel.forking():  # compiled by a child once: in Triton's cache, no second child
        _async_compile.active_mode.get().submit(a, _writer(tmp_path / a, "again"), None)
        assert parallel.pending() == 0
    assert (tmp_path / a).read_text() == "compiled"


def test_a_failing_or_hanging_child_only_means_the_parent_compiles(tmp_path):
    def fail():
        raise RuntimeError("compile error")

    fails, hangs = str(tmp_path / "fails"), str(tmp_path / "hangs")
    with parallel.forking():
        mode = _async_compile.active_mode.get()
        mode.submit(fails, fail, None)
        mode.submit(hangs, _writer(tmp_path / "late", delay=60), None)
    started = time.monotonic()
    parallel.wait(timeout_s=0.5)
    assert parallel.pending() == 0 and time.monotonic() - started < 30
    assert not (tmp_path / "late").exists()  # killed
    with parallel.forking():  # neither is in Triton's cache: a later warmup tries again
        _async_compile.active_mode.get().submit(fails, _writer(tmp_path / "retried"), None)
    parallel.wait()
    assert (tmp_path / "retried").read_text() == "compiled"


def test_threads_fork_and_join_together(tmp_path):
    """Several threads (say, data-parallel replicas on their first call) submit the same kernels
    and wait at once: one child per kernel, every child joined, no error."""
    keys = [str(tmp_path / f"k{i}") for i in range(6)]
    errors = []

    def call():
        try:
            with parallel.forking():
                for key in keys:
                    _async_compile.active_mode.get().submit(key, _writer(tmp_path / key, delay=0.05), None)
            parallel.wait()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and parallel.pending() == 0
    assert all((tmp_path / key).read_text() == "compiled" for key in keys)


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("PATTERNC_PARALLEL_COMPILE", "0")
    assert not parallel.enabled()
    with parallel.forking():
        assert _async_compile.active_mode.get() is None


@pytest.mark.parametrize("kwargs,message", [
    (dict(q_shape=(1, 2, 128, 64), device="cpu"), "precompile needs a CUDA device, got device='cpu'"),
    (dict(q_shape=(1, 2, 128)), "q_shape must be 4 sizes"),
    (dict(q_shape=(1, 2, 128, 64), kv_shape=(1, 2, 0, 64)), "kv_shape[2] must be a positive integer, got 0"),
    (dict(q_shape=(1, 2, 128, 64), dtype="bf16"), "dtype must be one of torch.float16"),
    (dict(q_shape=(1, 2, 128, 64), dtype=torch.float64), "dtype must be one of torch.float16"),
    (dict(q_shape=(1, 2, 128, 64), device="gpu"), "device must be a CUDA device such as 'cuda'"),
    (dict(q_shape=(1, 2, 128, 64), device=None), "device must be a CUDA device such as 'cuda'"),
    (dict(q_shape=(1, 2, 128, 64), device="cuda:9"), "this machine has 1 CUDA device(s)"),
    (dict(q_shape=(1, 3, 128, 64), kv_shape=(1, 2, 128, 64)), "not a multiple of k's 2 heads"),
    (dict(q_shape=(1, 2, 128, 64), block_m=7), "block_m"),
])
def test_precompile_errors_name_the_argument(kwargs, message, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the argument checks, not the machine's
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(patternc.PatterncError) as info:
        patternc.precompile("causal", **kwargs)
    assert message in str(info.value)


def test_a_pass_runs_the_interim_kernels_while_its_own_compile(monkeypatch, tmp_path):
    """`launch._compiling`: a plan's pass starts its kernels' children on its first call and
    reports them compiling (the call then runs the plan's interim) until they are done; then,
    and on every later call, the plan's own kernels run; a CUDA graph's capture waits for them.
    Nothing is tried where `INTERIM` is off or torch's deterministic algorithms are on."""
    from types import SimpleNamespace

    from patternc.ops import launch

    plan = SimpleNamespace(launches={})
    q = torch.zeros(1, 1, 8, 4)
    started, children = [], {"k1"}
    monkeypatch.setattr(launch, "INTERIM", True)
    monkeypatch.setattr(parallel, "enabled", lambda: True)
    monkeypatch.setattr(launch, "_compile", lambda calls, wait, nice: (started.append(calls), ("k1", "k2"))[1])
    monkeypatch.setattr(parallel, "busy", lambda keys: bool(children & set(keys)))
    monkeypatch.setattr(parallel, "wait", lambda keys: children.difference_update(keys))
    capturing = []
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: bool(capturing))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())  # CPU tensors here
    assert launch._compiling(plan, "forward", q, q, q, lambda: "calls")
    assert launch._compiling(plan, "forward", q, q, q, lambda: "again")  # still compiling: no second start
    assert started == ["calls"]
    children.clear()
    assert not launch._compiling(plan, "forward", q, q, q, lambda: "again")
    assert not launch._compiling(plan, "forward", q, q, q, lambda: "again") and started == ["calls"]
    children.add("k1")
    capturing.append(1)
    assert not launch._compiling(plan, "backward", q, q, q, lambda: "bwd") and not children  # waited
    assert started == ["calls", "bwd"]
    for off in (lambda: monkeypatch.setattr(launch, "INTERIM", False),
                lambda: torch.use_deterministic_algorithms(True)):
        plan.launches.clear()
        children.add("k1")
        off()
        try:
            assert not launch._compiling(plan, "forward", q, q, q, lambda: "calls") and len(started) == 2
        finally:
            torch.use_deterministic_algorithms(False)
            monkeypatch.setattr(launch, "INTERIM", True)
