"""Compiling kernels in parallel, each in a forked child process.

Triton compiles with Python's GIL held, so threads do not overlap (NOTES, v6 step 7), and a
new structure's first forward+backward compiled its kernels one after another (~1 s each).
Inside `forking()`, every kernel Triton would compile (a launch with ``warmup=True``, through
Triton's async-compile hook) is compiled by a child forked for it instead: the child runs
Triton's compiler and builds the kernel's launcher, both of which Triton keeps in its on-disk
cache (written atomically), and exits; nothing is launched. The parent later launches as
usual and Triton finds both in that cache (milliseconds).
`wait()` joins the children first, so the parent never compiles a kernel a child is still on;
`busy()` tells, without waiting, whether some are still compiling (a first call then runs its
plan's interim kernels: `patternc.ops.launch`). A kernel Triton's on-disk cache already holds
forks no child.

A child only compiles (MLIR, LLVM, ptxas): it makes no CUDA call, so forking a process that
holds a CUDA context is safe for it, as for PyTorch's forked data-loader workers. Whatever
goes wrong in a child (no fork, a failed or killed child, a compile error) only means the
parent compiles that kernel itself, as it would without this module, and reports any error
there. ``PATTERNC_PARALLEL_COMPILE=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
import time
import warnings

CHILD_TIMEOUT_S = 120.0  # a child compiling for longer (since its fork) is killed; the parent compiles
# CPU priority (added to the nice value) of children compiling kernels a call will wait for
# (the backward's, during the first forward), and of those compiling in the background while
# calls run other kernels (`patternc.ops.launch._compiling`): the calling process's own
# compile goes first, then the former (NOTES.md v17 steps 3 and 7).
SOON_NICE, BACKGROUND_NICE = 5, 10
_LOCK = threading.Lock()  # over the two tables: calls from several threads fork and join here
_CHILDREN: dict[str, tuple[int, float]] = {}  # Triton's cache key -> (pid, fork time) of its child
_COMPILED: set[str] = set()  # keys a child compiled (into Triton's cache: no need to fork again)


def enabled() -> bool:
    """Forking is possible and not turned off, and Triton has the hook this module uses."""
    if not hasattr(os, "fork") or os.environ.get("PATTERNC_PARALLEL_COMPILE", "1") == "0":
        return False
    try:
        from triton.runtime import _async_compile  # noqa: F401  (Triton 3.6; private, so checked)
    except ImportError:
        return False
    return True


class _Forking:
    """Triton's async-compile mode (`triton.runtime._async_compile.active_mode`): Triton calls
    ``submit`` where it would compile, and a launch with ``warmup=True`` returns its result.
    ``keys`` collects the cache key of every kernel submitted; ``nice``: the children's CPU
    priority, added to the nice value."""

    def __init__(self, keys: list, nice: int):
        self.keys, self.nice = keys, nice

    def submit(self, key, compile_fn, finalize_fn):
        self.keys.append(key)
        with _LOCK:
            if key in _CHILDREN or key in _COMPILED:
                return None
            if _on_disk(key):
                _COMPILED.add(key)
                return None
            try:
                pid = os.fork()
            except OSError:
                return None
            if pid == 0:
                _child(compile_fn, self.nice)
            _CHILDREN[key] = pid, time.monotonic()
        return None  # no kernel object: the parent's own launch loads the compiled kernel


def _child(compile_fn, nice: int) -> None:
    code = 1
    try:
        if nice:
            os.nice(nice)
        kernel = compile_fn()
        if hasattr(kernel, "metadata"):  # also its launcher (see `_launcher`)
            _launcher(kernel)
        code = 0
    except BaseException:  # the parent compiles this kernel again and reports the error
        pass
    finally:
        os._exit(code)  # no atexit handlers, no flush of the parent's buffers, no CUDA teardown


def _on_disk(key: str) -> bool:
    """Triton's on-disk cache holds the kernel of this cache key (`triton.compiler.compile` keeps
    each kernel's files under the key's hash, listed in a ``__grp__`` file written last)."""
    from triton.runtime.cache import get_cache_manager

    directory = getattr(get_cache_manager(hashlib.sha256(key.encode("utf-8")).hexdigest()), "cache_dir", None)
    with contextlib.suppress(OSError, TypeError):
        return any(name.startswith("__grp__") for name in os.listdir(directory))
    return False


def _launcher(kernel) -> None:
    """Build the launcher of a compiled kernel: a small C module per kernel signature, which
    Triton compiles with the system's C compiler (~0.3 s) and keeps in its cache, at the
    kernel's first launch (`CompiledKernel._init_handles`). No CUDA call."""
    from triton.runtime.driver import driver

    driver.active.launcher_cls(kernel.src, kernel.metadata)


@contextlib.contextmanager
def forking(nice: int = 0):
    """Launches with ``warmup=True`` inside this block compile their missing kernels in forked
    children and return at once. Yields the list of the cache keys of the kernels they asked
    for (filled as the block runs), for `wait` and `busy`. ``nice``: the children's CPU
    priority (`SOON_NICE`, `BACKGROUND_NICE`), below this process's. Does nothing if
    `enabled()` is false."""
    keys = []
    if not enabled():
        yield keys
        return
    from triton.runtime import _async_compile

    with _LOCK:
        _reap()  # children of calls whose backward never came
    token = _async_compile.active_mode.set(_Forking(keys, nice))
    try:
        with warnings.catch_warnings():  # Python 3.12 warns on fork() with threads running
            warnings.simplefilter("ignore", DeprecationWarning)
            yield keys
    finally:
        _async_compile.active_mode.reset(token)


def pending() -> int:
    """How many children have not been joined yet."""
    return len(_CHILDREN)


def busy(keys) -> bool:
    """Some of these kernels (cache keys from `forking`) are still compiling in a child."""
    with _LOCK:
        _reap()
        return any(key in _CHILDREN for key in keys)


def wait(keys=None, timeout_s: float = CHILD_TIMEOUT_S) -> None:
    """Join the children compiling these kernels (cache keys from `forking`; None: every child):
    what they compiled is then in Triton's cache. Kill any that has been compiling for more than
    ``timeout_s`` since its fork."""
    while True:
        with _LOCK:
            _reap(timeout_s)
            if not any(keys is None or key in keys for key in _CHILDREN):
                return
        time.sleep(0.002)


def _reap(timeout_s: float | None = None) -> None:
    """Join the children that have exited (and kill those past ``timeout_s``); holds `_LOCK`."""
    now = time.monotonic()
    for key, (pid, forked) in list(_CHILDREN.items()):
        late = timeout_s is not None and now - forked > timeout_s
        if late:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            done, status = os.waitpid(pid, 0 if late else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere (an application's SIGCHLD handler): status unknown
            done, status = pid, -1
        if done == 0:
            continue
        del _CHILDREN[key]
        if status == 0:
            _COMPILED.add(key)
