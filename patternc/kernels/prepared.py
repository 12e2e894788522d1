"""Launching a compiled kernel again with every argument fixed but the call's tensors.

Triton's own launch of a compiled kernel costs 35-85 us of CPU on a GPU host, as much as a
small kernel runs (benchmarks/overhead.py --breakdown; NOTES v9): its runner looks up the
current device and stream and builds launch metadata for hooks, its launcher wraps scratch
allocation, and every TMA descriptor is a `TensorDescriptor` object encoded into a 128-byte
CUtensorMap at each launch; the C launch function then asks the driver about every pointer.

`Prepared` does once what a call geometry fixes: the argument list, with the plan's tables
as plain addresses, and the C launch function Triton built for the kernel. Per launch it
puts in the call's tensors, and for each `Tma` the encoded descriptor, cached by address
(the geometry fixes the tensor's shape, strides, dtype and tile, so the address is all that
varies), and for a kernel that needs global scratch (descriptors made in the kernel) a
buffer from torch's allocator, and calls the C function. Wherever Triton's internals are
not as this module expects (another Triton version, a launch hook such as a profiler's,
profiling scratch), it launches through Triton's runner, as `triton_args` describes, inside
`scratch` (which lends that runner torch's allocator for the launch).
"""

from __future__ import annotations

import contextvars
import types
from typing import NamedTuple

import torch

from .cache import _version, descriptor

ENCODED_PER_SLOT = 32  # encoded descriptors a slot keeps (addresses seen), before starting over


class Tma(NamedTuple):
    """``tensor`` handed to a kernel as a TMA descriptor of tiles of ``block`` (Gluon's kind for
    ``gluon``: `cache.descriptor`)."""
    tensor: torch.Tensor
    block: tuple
    gluon: bool = False


def triton_args(values: dict) -> dict:
    """``values`` as Triton's launch and warm-up take them: each `Tma` a `TensorDescriptor`."""
    return {name: _triton_arg(v) for name, v in values.items()}


def _triton_arg(value):
    return descriptor(value.tensor, list(value.block), value.gluon) if isinstance(value, Tma) else value


def scratch(launch, *args, **kwargs):
    """``launch(*args, **kwargs)`` with torch's allocator as Triton's for global scratch, which a
    kernel that makes its descriptors needs (Triton's default raises). Set in a copy of the
    caller's context (`contextvars`): an allocator the caller set elsewhere stays theirs."""
    return contextvars.copy_context().run(_with_torch_allocator, launch, args, kwargs)


def _with_torch_allocator(launch, args, kwargs):
    import triton

    triton.set_allocator(_torch_buffer)
    return launch(*args, **kwargs)


def _torch_buffer(size: int, alignment: int, stream) -> torch.Tensor:
    """Scratch from torch's caching allocator (blocks are 512-byte aligned), on the current
    stream, which the launch runs on: freed after it, reused only by work ordered after it.
    (`_c_launch` leaves kernels that want a coarser alignment to Triton's runner.)"""
    return torch.empty(size, dtype=torch.uint8, device="cuda")


class Prepared:
    """``compiled`` (Triton's compiled kernel) with ``values``, one per kernel parameter, those at
    ``slots`` (in order) to be replaced by each launch's tensors and `Tma`s; ``values`` holds the
    first launch's there (they fix the descriptors' encoded width) and no reference is kept."""

    def __init__(self, compiled, values: list, slots: list[int]):
        self.compiled, self.slots = compiled, slots
        self.values = [None if i in slots else v for i, v in enumerate(values)]  # Triton's path
        self.c_launch = _c_launch(compiled)
        if self.c_launch is None:
            return
        runner, types_ = compiled.run, list(compiled.src.signature.values())
        metas = iter(getattr(compiled.metadata, "tensordesc_meta", None) or ())
        flat, places, at = [], {}, {s: values[s] for s in slots}
        for i, (value, kind) in enumerate(zip(values, types_)):
            encoded = isinstance(kind, str) and kind.startswith("tensordesc")
            meta = next(metas, None) if encoded else None
            if encoded and meta is None:
                return self._unprepared()  # Triton's other encoding (it would hold the tensor itself)
            if i in at:  # the call's: a tensor, or a descriptor (its width from the first launch's)
                codes = {at[i].tensor.data_ptr(): _encode(at[i], meta)} if encoded else None
                width = len(next(iter(codes.values()))) if encoded else 1
                places[i] = (len(flat), width, codes, meta)
                flat.extend([None] * width)
            elif encoded:
                return self._unprepared()  # a fixed descriptor: never made by launch.py
            else:
                flat.append(value.data_ptr() if isinstance(value, torch.Tensor) else value)
        if len(values) != len(types_):
            return self._unprepared()
        self.flat, self.places = flat, [places[s] for s in slots]
        self.head = (compiled.function, runner.launch_cooperative_grid, runner.launch_pdl)
        self.tail = (None, compiled.packed_metadata, None, None, None)  # profile scratch, metadata, hooks
        self.scratch = runner.global_scratch_size * runner.num_ctas  # bytes per program
        self.device = torch.cuda.current_device()

    def _unprepared(self):
        self.c_launch = None

    def __call__(self, programs: int, tensors) -> None:
        """Launch ``programs`` programs with ``tensors`` (tensors, `Tma`s or None) at the slots."""
        if self.c_launch is None or _hooked():
            values = self.values.copy()
            for slot, value in zip(self.slots, tensors):
                values[slot] = _triton_arg(value)
            scratch(self.compiled[(programs, 1, 1)], *values)
            return
        args = self.flat.copy()
        for (at, width, encoded, meta), value in zip(self.places, tensors):
            if encoded is None:
                args[at] = value
                continue
            address = value.tensor.data_ptr()
            code = encoded.get(address)
            if code is None:
                if len(encoded) >= ENCODED_PER_SLOT:
                    encoded.clear()
                code = encoded[address] = _encode(value, meta)
            args[at:at + width] = code
        buffer = _torch_buffer(programs * self.scratch, 1, None) if self.scratch else None
        self.c_launch(programs, 1, 1, torch._C._cuda_getCurrentRawStream(self.device), *self.head, buffer, *self.tail,
                      *args)


def _encode(value: Tma, meta) -> list:
    """The C launcher's arguments for descriptor ``value`` (Triton's own encoding)."""
    from triton.backends.nvidia.driver import make_tensordesc_arg

    return make_tensordesc_arg(_triton_arg(value), meta)


def _hooked() -> bool:
    """A launch hook is set (a profiler's): launches go through Triton, which calls it. Triton
    3.6 keeps hook chains (empty: none set), and takes None or a plain function too."""
    from triton import knobs

    return any(getattr(h, "calls", h) for h in (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook))


def _c_launch(compiled):
    """The C launch function Triton built for ``compiled`` (under the Python wrapper that encodes
    descriptors), or None where this Triton is not laid out as 3.6 is, or the kernel needs
    profiling scratch. (Launch hooks are checked per launch.)"""
    if not _known_triton():
        return None
    try:
        runner = compiled.run
        if runner.profile_scratch_size or runner.global_scratch_align > 512:
            return None
        launch = runner.launch
        if isinstance(launch, types.FunctionType):  # Triton's descriptor wrapper: the C function is its `launcher`
            cells = dict(zip(launch.__code__.co_freevars, launch.__closure__ or ()))
            launch = cells["launcher"].cell_contents if "launcher" in cells else None
        return launch if _is_c_function(launch) else None
    except Exception:  # noqa: BLE001  (anything unexpected: Triton's own path)
        return None


def _known_triton() -> bool:
    """Triton 3.6, whose launcher this module knows (3.7 on replaced it: another C interface)."""
    import triton

    return _version(triton.__version__) == (3, 6)


def _is_c_function(f) -> bool:
    return isinstance(f, types.BuiltinFunctionType)
