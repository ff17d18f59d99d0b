"""``SharedBytes``: a byte buffer in shared memory that crosses to worker
processes without a copy."""

from __future__ import annotations

import array
import ctypes
import mmap
import os
import pickle
import weakref
from typing import Any, Optional, Tuple, Union

_MFD_FLAGS = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
_PAGE = mmap.PAGESIZE

# Received buffers by address, to send one back without a copy when the
# task returns it unwritten (an echo, a view handed through).
_RECEIVED: "weakref.WeakValueDictionary[int, SharedBytes]" = weakref.WeakValueDictionary()


def _address(buf: Any) -> Optional[int]:
    """The address of a writable buffer's first byte (None if read-only)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(buf))
    except (TypeError, ValueError):
        return None


def _unwritten(addr: int, n: int) -> bool:
    """Whether no page of a private file mapping was written (copied on
    write): /proc/self/pagemap marks a present page that is no longer the
    file's as anonymous (bit 61 clear), a swapped one with bit 62."""
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(addr // _PAGE * 8)
            data = f.read(((addr + n - 1) // _PAGE - addr // _PAGE + 1) * 8)
    except OSError:
        return False
    entries = array.array("Q")
    entries.frombytes(data)
    return not any(((e >> 63) & 1 and not (e >> 61) & 1) or (e >> 62) & 1 for e in entries)


def shareable(raw: memoryview) -> Optional[Tuple[int, int]]:
    """``(fd, len)`` of a new descriptor of the pages behind ``raw``, when
    they can cross without a copy: a whole :class:`SharedBytes` made here,
    or a whole buffer received from another process that nothing wrote to."""
    owner = raw.obj
    if isinstance(owner, SharedBytes) and owner._fd is not None and raw.nbytes == len(owner):
        return (os.dup(owner._fd), raw.nbytes)
    if not _RECEIVED:
        return None
    addr = _address(raw)
    got = _RECEIVED.get(addr) if addr is not None else None
    if got is None or got.closed or got._src is None or len(got) != raw.nbytes:
        return None
    if not _unwritten(addr, raw.nbytes):
        return None
    return (os.dup(got._src), raw.nbytes)


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
    _src: Optional[int] = None

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
            self._fd = self._src = None
            return self
        self._fd = None
        # Kept to send the pages back unwritten without a copy.
        self._src = os.dup(fd)
        addr = _address(self)
        if addr is not None:
            _RECEIVED[addr] = self
        return self

    def _close_fds(self) -> None:
        for name in ("_fd", "_src"):
            fd = getattr(self, name, None)
            if fd is not None:
                setattr(self, name, None)
                os.close(fd)

    def close(self) -> None:
        """Unmaps the buffer (and closes its descriptors)."""
        self._close_fds()
        super().close()

    def __del__(self) -> None:
        self._close_fds()

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
