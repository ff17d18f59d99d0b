"""How calls and results cross to worker processes.

Pickle protocol 5: functions travel by reference (as concurrent.futures
sends them), lambdas and closures through cloudpickle where it is
installed. Out-of-band buffers of 64 KiB and more (numpy arrays,
``bytearray``, ``pickle.PickleBuffer``, :class:`seedcore.SharedBytes`) are
written once into an anonymous memfd, whose descriptor crosses the socket;
the receiver maps it copy-on-write, so nothing large goes through the pipe
and the received buffer is writable without touching the sender's copy.
A pickle stream of 64 KiB or more (a large ``bytes`` value is pickled in
band) crosses the same way.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, List, Tuple, Union

from ._seedcore import SHM_THRESHOLD
from ._shared import SharedBytes, shareable

Wire = Union[bytes, Tuple[int, int]]

_MFD_FLAGS = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING


def _to_memfd(data: memoryview) -> Tuple[int, int]:
    """``data`` copied into a new memfd: ``(fd, len)``. The receiver of the
    tuple owns the descriptor."""
    n = data.nbytes
    fd = os.memfd_create("seedcore-py", _MFD_FLAGS)
    try:
        # write() fills the page cache directly: cheaper than faulting in a
        # fresh mapping page by page.
        view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        done = 0
        while done < n:
            done += os.write(fd, view[done:])
    except BaseException:
        os.close(fd)
        raise
    return (fd, n)


def to_wire(data: Any) -> Wire:
    """A bytes-like value as it crosses: ``bytes`` when small, else a memfd."""
    view = memoryview(data)
    if view.nbytes < SHM_THRESHOLD:
        return bytes(view)
    return _to_memfd(view)


def from_wire(w: Wire) -> Any:
    """A crossed buffer as a bytes-like value (an ``mmap`` for a memfd,
    private and writable where the kernel allows it)."""
    if isinstance(w, bytes):
        return w
    fd, n = w
    try:
        if n == 0:
            return b""
        return memoryview(SharedBytes._received(fd, n))
    finally:
        os.close(fd)


def _cloudpickle():
    try:
        import cloudpickle  # type: ignore[import-not-found]
    except ImportError:
        return None
    return cloudpickle


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    module = getattr(obj, "__module__", None)
    if name:
        return f"{module}.{name}" if module else name
    return repr(obj)


def _close_all(buffers: List[Wire]) -> None:
    for b in buffers:
        if isinstance(b, tuple):
            os.close(b[0])


def dumps(obj: Any, what: str = "the value") -> Tuple[Wire, List[Wire]]:
    """``obj`` pickled: ``(payload, buffers)`` ready to cross. Raises
    :class:`~seedcore.NotPicklable` (a ``TypeError``) naming what cannot be
    pickled."""
    from ._errors import NotPicklable

    buffers: List[Wire] = []
    try:
        data = pickle.dumps(obj, 5, buffer_callback=_out_of_band(buffers))
    except Exception as first:
        _close_all(buffers)
        buffers = []
        cp = _cloudpickle()
        if cp is None:
            raise NotPicklable(
                f"{what} cannot be pickled ({first}); process tasks take module-level "
                f"functions and picklable arguments (install cloudpickle for lambdas and closures)"
            ) from first
        try:
            data = cp.dumps(obj, 5, buffer_callback=_out_of_band(buffers))
        except Exception as second:
            _close_all(buffers)
            raise NotPicklable(f"{what} cannot be pickled, even by cloudpickle: {second}") from second
    if len(data) < SHM_THRESHOLD:
        return data, buffers
    return _to_memfd(memoryview(data)), buffers


def _out_of_band(buffers: List[Wire]):
    """A ``buffer_callback`` that sends large buffers through a memfd."""

    def callback(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < SHM_THRESHOLD:
            return True  # in band
        shared = shareable(raw)
        buffers.append(shared if shared is not None else _to_memfd(raw))
        return False

    return callback


def dumps_call(fn: Any, args: tuple, kwargs: dict) -> Tuple[Wire, List[Wire]]:
    """A call ``fn(*args, **kwargs)`` pickled for a worker."""
    return dumps((fn, args, kwargs), f"the call of {_describe(fn)}")


def loads(payload: Wire, buffers: List[Wire]) -> Any:
    """The value that :func:`dumps` pickled."""
    return pickle.loads(from_wire(payload), buffers=[from_wire(b) for b in buffers])
