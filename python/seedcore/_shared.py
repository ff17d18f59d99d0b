"""``SharedBytes``: a byte buffer in shared memory that crosses to worker
processes without a copy."""

from __future__ import annotations

import mmap
import os
import pickle
from typing import Any, Optional, Union

_MFD_FLAGS = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING


class SharedBytes(mmap.mmap):
    """A fixed-size, writable byte buffer in an anonymous memfd.

    It is an ``mmap.mmap`` (so a bytes-like object: slicing, ``memoryview``,
    ``numpy.frombuffer`` all work). Passed to or returned from a process
    task it crosses as its descriptor: the other side maps the same pages,
    copy-on-write, so nothing is copied and the receiver's writes stay its
    own. Do not write to a buffer while a task that was given it runs: the
    task may see the write.

    ``SharedBytes(n)`` is ``n`` zero bytes; ``SharedBytes(data)`` a copy of a
    bytes-like ``data``. No name in any file system refers to it, and it
    is freed when the last mapping of it closes.
    """

    _fd: Optional[int]

    def __new__(cls, data: Union[int, Any]) -> "SharedBytes":
        if isinstance(data, int):
            n, view = data, None
        else:
            view = memoryview(data).cast("B")
            n = view.nbytes
        if n <= 0:
            raise ValueError("a SharedBytes holds at least one byte")
        fd = os.memfd_create("seedcore-shared", _MFD_FLAGS)
        try:
            if view is None:
                os.ftruncate(fd, n)
            else:
                done = 0
                while done < n:
                    done += os.write(fd, view[done:])
            self = super().__new__(cls, fd, n)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    @classmethod
    def _received(cls, fd: int, n: int) -> "SharedBytes":
        """Maps a received memfd (which this call does not close), private
        and writable where the kernel allows it."""
        try:
            self = super().__new__(cls, fd, n, flags=mmap.MAP_PRIVATE,
                                   prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except PermissionError:
            # Kernels before 6.7 refuse writable private maps of a sealed memfd.
            self = super().__new__(cls, fd, n, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        self._fd = None
        return self

    def _share(self) -> Optional[tuple]:
        """``(fd, len)`` of a new descriptor for these pages, or None for a
        received buffer (whose pages are private to this process)."""
        if self._fd is None:
            return None
        return (os.dup(self._fd), len(self))

    def close(self) -> None:
        """Unmaps the buffer (and closes its descriptor)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        super().close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            os.close(fd)

    def __reduce_ex__(self, protocol: int):
        if protocol >= 5:
            return (_rebuild, (pickle.PickleBuffer(self),))
        return (_rebuild, (bytes(self),))

    def __repr__(self) -> str:
        return f"<seedcore.SharedBytes {len(self)} bytes>"


def _rebuild(buf: Any) -> SharedBytes:
    owner = getattr(buf, "obj", None)
    if isinstance(owner, SharedBytes) and memoryview(buf).nbytes == len(owner):
        return owner
    return SharedBytes(buf)
