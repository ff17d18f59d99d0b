"""The worker side: ``python -m seedcore._worker PREPARATION``.

A process pool of a :class:`seedcore.ConcurrentSystem` starts its workers
as fresh Python interpreters (never by ``fork``) running :func:`main` (by a
one-line ``-c`` bootstrap that first puts the parent's copy of the package
on ``sys.path``, so that a worker imports the very package its parent
runs, installed or not). It
hands control to the Rust worker loop, which runs each pickled call through
:func:`run`, and exits with the loop's exit code once the pool lets the
worker go, through ``sys.exit`` so that ``atexit`` handlers run and the
streams are flushed.

Before the first call, the parent's preparation is applied as
``multiprocessing``'s spawn start method does: ``sys.path``, the working
directory, and the parent's ``__main__`` imported as ``__mp_main__``, so
functions defined in the main script can be called. A main script that
builds a system without an ``if __name__ == "__main__":`` guard fails its
tasks with an error that says so, instead of starting pools of its own.
"""

from __future__ import annotations

import base64
import pickle
import sys
import traceback
from typing import Any, List, Optional

_prepared = False
_prepare_error: Optional[BaseException] = None
_preparation: Optional[dict] = None

#: True while the parent's ``__main__`` is imported in a worker.
importing_main = False


def encode_preparation(data: dict) -> str:
    """The preparation as one command-line argument."""
    return base64.b64encode(pickle.dumps(data, 4)).decode("ascii")


def _prepare() -> None:
    """Applies the parent's preparation once; re-raises its failure."""
    global _prepared, _prepare_error, importing_main
    if _prepare_error is not None:
        raise _prepare_error
    if _prepared:
        return
    _prepared = True
    if not _preparation:
        return
    import multiprocessing.spawn

    importing_main = True
    try:
        multiprocessing.spawn.prepare(_preparation)
    except BaseException as e:  # noqa: BLE001 - reported with every task
        _prepare_error = RuntimeError(
            f"the worker could not import the parent's main module: {type(e).__name__}: {e}"
        )
        _prepare_error.__cause__ = e
        raise _prepare_error from e
    finally:
        importing_main = False


def _from_wire(w: Any) -> Any:
    from ._pickling import from_wire

    return from_wire(w)


def _pickled_exception(exc: BaseException) -> bytes:
    """``(exc, traceback text)`` pickled; an exception that cannot be
    pickled is replaced by one that keeps its type name and message."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    tb = '\n"""\n' + tb + '"""'
    try:
        return pickle.dumps((exc, tb), 5)
    except Exception as e:  # noqa: BLE001
        from ._errors import TaskError

        stand_in = TaskError(
            f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} "
            f"(the exception could not be pickled: {e})"
        )
        return pickle.dumps((stand_in, tb), 5)


def run(payload: Any, buffers: List[Any]) -> tuple:
    """Runs one pickled call: ``(True, payload, buffers)`` with the pickled
    result, or ``(False, message, pickled_exception)``."""
    from ._pickling import dumps, loads

    try:
        _prepare()
        fn, args, kwargs = loads(payload, buffers)
        result = fn(*args, **kwargs)
        out, out_buffers = dumps(result, "the result")
        return (True, out, out_buffers)
    except BaseException as exc:  # noqa: BLE001 - the caller gets it
        message = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return (False, message, _pickled_exception(exc))


def initialize(payload: bytes) -> None:
    """Takes the parent's ``multiprocessing`` authkey, prepares the worker
    (the parent's ``sys.path`` and main module), then runs the pickled
    initializer, if any: ``(authkey, pickled (fn, args) or None)``."""
    import multiprocessing

    authkey, call = pickle.loads(payload)
    multiprocessing.current_process().authkey = authkey
    _prepare()
    if call is not None:
        fn, args = pickle.loads(call)
        fn(*args)


def main(argv: Optional[List[str]] = None) -> int:
    """The worker's entry; returns its exit code."""
    global _preparation
    from . import _seedcore

    args = sys.argv[1:] if argv is None else argv
    if args:
        _preparation = pickle.loads(base64.b64decode(args[0]))
    code = _seedcore.worker_main()
    if code is None:
        print(
            "seedcore._worker: this module is run by a seedcore process pool, not by hand",
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    # Run as a script this file is `__main__`; the binding calls into
    # `seedcore._worker`, so the state must live in that module.
    from seedcore import _worker

    sys.exit(_worker.main())
