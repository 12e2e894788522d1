"""Kernel modules on disk: generated mask modules written atomically, and imported (with the
static kernels) either compiled or for Triton's interpreter, as each call asks.

Triton decides at decoration time whether a function is interpreted, so each module is
imported once per mode under its own name, with ``TRITON_INTERPRET`` set for the duration
of that import only. Generated modules live in the cache directory (``PATTERNC_CACHE_DIR``,
else ``$XDG_CACHE_HOME/patternc`` or ``~/.cache/patternc``) as ``<module_name>.py``, named by
the hash of their text: written to a private temp file and renamed, so concurrent processes
never see a partial file (Triton reads kernel source from real files).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

from ..errors import PatterncError
from .emit import KernelSource

_FLASH = Path(__file__).with_name("flash.py")
_LOCK = threading.Lock()
_MODULES: dict[tuple[str, bool], object] = {}  # (name, interpret) -> imported module


def cache_dir() -> Path:
    configured = os.environ.get("PATTERNC_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "patternc"


def write(src: KernelSource) -> Path:
    """The module's file in the cache directory, written atomically if absent or different."""
    directory = cache_dir()
    path = directory / f"{src.module_name}.py"
    try:
        if path.read_text(encoding="utf-8") == src.text:
            return path
    except OSError:
        pass
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{src.module_name}.", suffix=".tmp")
    except OSError as exc:
        raise PatterncError(f"cannot write the kernel cache in '{directory}': {exc.strerror or exc} "
                            "(set PATTERNC_CACHE_DIR to a writable directory)") from None
    try:  # a private temp file, then rename: readers see the old file or the whole new one
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(src.text)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise PatterncError(f"cannot write the kernel cache in '{directory}': {exc.strerror or exc} "
                            "(set PATTERNC_CACHE_DIR to a writable directory)") from None
    return path


@contextlib.contextmanager
def interpreting(on: bool):
    """Triton's interpret switch (``TRITON_INTERPRET``), set for the duration of the block."""
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before


def prepare(interpret: bool) -> None:
    """Make sure Triton runs in the asked mode, importing it in that mode if it is not imported
    yet. Triton's own helpers (``tl.cdiv``, the combine functions of ``tl.max`` ...) are
    compiled or interpreted from the moment triton is imported, so the first kernel use in a
    process decides, and a process cannot use both modes. (Calling a torch custom operator
    imports torch._dynamo, which imports Triton, compiled: interpreted calls prepare first.)
    The interpreter also needs numpy (`_interpreter_numpy`); compiled kernels do not."""
    numpy = _interpreter_numpy() if interpret else None  # before Triton: its interpreter imports numpy
    if "triton" not in sys.modules and interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton
        from triton.language.standard import cdiv
        from triton.runtime.jit import JITFunction
    except ImportError as exc:
        raise PatterncError(f"the kernels need Triton, which is not available ({exc}); CPU tensors can use "
                            "backend='reference'") from None

    if numpy is not None and _version(numpy.__version__) >= (2, 4) and _version(triton.__version__) < (3, 7):
        raise PatterncError(f"Triton {triton.__version__}'s interpreter fails with numpy {numpy.__version__} (it "
                            "needs numpy < 2.4: triton-lang/triton#9171); pip install 'patternc[interpreter]' "
                            "(numpy<2.4), or use backend='reference'")
    if isinstance(cdiv, JITFunction) == interpret:
        raise PatterncError(
            "CPU tensors need Triton's interpreter, but Triton was already imported in compiled mode in this "
            "process; set TRITON_INTERPRET=1 before importing triton, or use backend='reference'" if interpret else
            "CUDA tensors need compiled Triton kernels, but Triton was imported with TRITON_INTERPRET=1 in this "
            "process; unset it")


def _interpreter_numpy():
    """numpy, which Triton's interpreter (kernels on CPU tensors) runs on: a clear error if absent."""
    try:
        import numpy
    except ImportError:
        raise PatterncError("Triton's interpreter (the kernels on CPU tensors) needs numpy, which is not "
                            "installed: pip install 'patternc[interpreter]' (numpy<2.4), or use "
                            "backend='reference'") from None
    return numpy


def _version(text: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '2.4.0rc1' or '3.6.0+git1234'."""
    major, minor = (re.match(r"\d+", part) for part in (text.split(".") + ["0"])[:2])
    return int(major.group()) if major else 0, int(minor.group()) if minor else 0


def descriptor(t, block_shape: list[int], gluon: bool = False):
    """A TMA tensor descriptor of all of ``t``, loading tiles of ``block_shape`` (zero past the edges);
    ``gluon``: Gluon's kind, which names its shared-memory layout (`hopper.py` takes those)."""
    if not gluon:
        from triton.tools.tensor_descriptor import TensorDescriptor

        return TensorDescriptor(t, list(t.shape), list(t.stride()), block_shape)
    import torch
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    dtype = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}[t.dtype]
    layout = gl.NVMMASharedLayout.get_default_for(block_shape, dtype)
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block_shape, layout)


def kernels(interpret: bool):
    """The static flash-attention kernels (`flash.py`), compiled or interpreted."""
    return _module("patternc_flash", lambda: _FLASH, interpret)


def hopper_supported() -> bool:
    """Triton is the version `hopper.py` is written for: 3.6. Gluon is experimental and changes its
    API between releases (3.9 renamed the TMA copies), so other versions run the plain loops."""
    try:
        import triton
    except ImportError:
        return False
    return _version(triton.__version__) == (3, 6)


def hopper_kernels():
    """The warp-specialized Hopper forward and fused backward (`hopper.py`, in Gluon: compiled only,
    never interpreted)."""
    module = _MODULES.get(("hopper", False))
    if module is None:  # the first call: check Triton's mode once
        prepare(False)
        from . import hopper as module

        _MODULES[("hopper", False)] = module
    return module


def mask_function(src: KernelSource, interpret: bool):
    """The generated ``pattern_mask`` of ``src``, compiled or interpreted."""
    return _module(src.module_name, lambda: write(src), interpret).pattern_mask


def _module(name: str, path, interpret: bool):
    """The module ``name`` in this mode: a dictionary lookup once imported (every launch comes
    here); the first time, Triton's mode is checked, ``path()`` gives the file, and it is
    imported with Triton's interpret switch set as asked (Triton decides at decoration time)."""
    module = _MODULES.get((name, interpret))
    if module is not None:
        return module
    prepare(interpret)
    with _LOCK:
        module = _MODULES.get((name, interpret))
        if module is None:
            full = f"{name}_interpreted" if interpret else name
            spec = importlib.util.spec_from_file_location(full, path())
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            with interpreting(interpret):
                spec.loader.exec_module(module)
            _MODULES[(name, interpret)] = module
        return module
