"""The names of TheSeedCoreConcurrentSystem, on seedcore.

A program written for TheSeedCoreConcurrentSystem runs with one changed
import::

    from seedcore.compat import ConcurrentSystem, ConnectConcurrentSystem

    async def work(start_time):
        ...

    async def done(result):
        ...
        ConcurrentSystem.closeSystem()

    async def main():
        ConcurrentSystem.submitThreadTask(work, callback=done, start_time=time.time())

    if __name__ == "__main__":
        ConnectConcurrentSystem(CoreProcessCount=2, CoreThreadCount=4)
        ConcurrentSystem.MainEventLoop.create_task(main())
        ConcurrentSystem.MainEventLoop.run_forever()

What maps to what:

* ``ConnectConcurrentSystem(**settings)`` builds one
  :class:`seedcore.ConcurrentSystem` (``CoreProcessCount`` →
  ``processes.core``, ``MaximumThreadCount`` → ``threads.max``,
  ``ExpandPolicy="AutoExpand"`` → ``balance.expand = "auto"``, ...) and the
  ``MainEventLoop`` (a qasync loop where a ``QApplication`` exists).
* ``submitProcessTask`` / ``submitThreadTask(task, priority=0,
  callback=None, future=None, lock=False, lock_timeout=3, timeout=None,
  gpu_boost=False, gpu_id=0, retry=False, max_retries=3, *args,
  **kwargs)`` return a :class:`TaskFuture`. Priority 0 is the most urgent,
  10 the least, as in the seed. ``lock=True`` serializes the tasks of one
  function (a lock named after it). Coroutine functions are run (in a
  worker process with ``asyncio.run``). ``callback(result)`` runs on the
  ``MainEventLoop`` (awaited if it is a coroutine function); a failed task
  passes its exception as the result.
* ``submitSystemProcessTask`` / ``submitSystemThreadTask(task, count=1,
  *args, **kwargs)`` run service work outside the pools' capacity.
* ``closeSystem()`` shuts the system down and stops the ``MainEventLoop``
  (unless a Qt application owns it).

``gpu_boost`` and ``gpu_id`` are accepted and ignored (GPU tasks are the
Rust API's ``submit_gpu``). ``Priority``, ``TaskThreshold``,
``GlobalTaskThreshold`` and ``DebugMode`` are accepted; ``TaskThreshold``
and ``GlobalTaskThreshold`` have no seedcore equivalent (the balancer
reads the queues itself).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import sys
from typing import Any, Callable, List, Optional, Type, Union

from ._future import TaskFuture as _TaskFuture
from ._system import ConcurrentSystem as _System

__all__ = ["ConcurrentSystem", "ConnectConcurrentSystem", "TaskFuture", "MainEventLoop"]

_EXPAND = {"NoExpand": "none", "AutoExpand": "auto", "BeforehandExpand": "beforehand"}
_SHRINK = {"NoShrink": "none", "AutoShrink": "auto", "TimeoutShrink": "timeout"}
_PROCESS_PRIORITY = {
    "IDLE": "idle",
    "BELOW_NORMAL": "below_normal",
    "NORMAL": "normal",
    "ABOVE_NORMAL": "above_normal",
    "HIGH": "high",
    "REALTIME": "realtime",
}

#: The main event loop, once :func:`ConnectConcurrentSystem` made it.
MainEventLoop: Optional[asyncio.AbstractEventLoop] = None


class TaskFuture(_TaskFuture):
    """The seed's ``TaskFuture``: a :class:`seedcore.TaskFuture` with the
    seed's ``taskID`` and the ``execute`` / ``asyncExecute`` hooks that a
    subclass passed as ``future=`` may define."""

    @property
    def taskID(self) -> str:
        """The task's id."""
        return self.id

    def execute(self) -> Any:
        """Synchronous handling of the result, for subclasses."""
        raise NotImplementedError("The execute method must be implemented in a subclass.")

    async def asyncExecute(self) -> Any:
        """Asynchronous handling of the result, for subclasses."""
        raise NotImplementedError("The asyncExecute method must be implemented in a subclass.")


def _run_coroutine(fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Runs a coroutine function to its end (in a worker process)."""
    return asyncio.run(fn(*args, **kwargs))


def _deliver(callback: Callable[[Any], Any], fut: _TaskFuture) -> None:
    """Runs ``callback(result)`` on the main event loop."""
    loop = ConcurrentSystem.MainEventLoop
    try:
        result = fut.result()
    except BaseException as e:  # noqa: BLE001 - the seed hands the failure over
        result = e

    def run() -> None:
        if asyncio.iscoroutinefunction(callback):
            loop.create_task(callback(result))
        else:
            callback(result)

    if loop is None or loop.is_closed():
        run()
    else:
        loop.call_soon_threadsafe(run)


class ConcurrentSystem:
    """The seed's ``ConcurrentSystem``: class methods over one
    :class:`seedcore.ConcurrentSystem`."""

    MainEventLoop: Optional[asyncio.AbstractEventLoop] = None
    _INSTANCE: Optional[_System] = None
    _SERVICE: Optional[cf.ThreadPoolExecutor] = None
    _QT = False

    @classmethod
    def _system(cls) -> _System:
        if cls._INSTANCE is None:
            raise RuntimeError("TheSeedCore ConcurrentSystem has not been initialized.")
        return cls._INSTANCE

    @classmethod
    def _submit(
        cls,
        process: bool,
        task: Callable[..., Any],
        priority: int,
        callback: Optional[Callable[[Any], Any]],
        future: Optional[Type[TaskFuture]],
        lock: bool,
        lock_timeout: Optional[float],
        timeout: Optional[float],
        retry: bool,
        max_retries: int,
        args: tuple,
        kwargs: dict,
    ) -> TaskFuture:
        system = cls._system()
        if not callable(task):
            raise ValueError("The task must be a callable.")
        opts: dict = {"priority": max(0, min(10, int(priority)))}
        if timeout is not None:
            opts["timeout"] = timeout
        if retry:
            opts["retries"] = max_retries
            opts["retry_on"] = ["error", "timeout", "crash"]
        if lock:
            name = f"{getattr(task, '__module__', '')}.{getattr(task, '__qualname__', repr(task))}"
            opts["lock"] = name
            if lock_timeout is not None:
                opts["lock_timeout"] = lock_timeout
        coroutine = asyncio.iscoroutinefunction(task)
        if process:
            if coroutine:
                inner = system.submit_process(_run_coroutine, task, args, kwargs, **opts)
            else:
                inner = system.submit_process(task, *args, **opts, **kwargs)
        elif coroutine:
            inner = system.submit_async(task, *args, **opts, **kwargs)
        else:
            inner = system.submit_thread(task, *args, **opts, **kwargs)
        cls_ = future if future is not None else TaskFuture
        if not (isinstance(cls_, type) and issubclass(cls_, _TaskFuture)):
            raise TypeError("future must be a subclass of seedcore.compat.TaskFuture")
        fut = cls_.__new__(cls_)
        _TaskFuture.__init__(fut, inner._h, inner._route)
        if callback is not None:
            fut.add_done_callback(lambda f: _deliver(callback, f))
        return fut

    @classmethod
    def submitProcessTask(
        cls,
        task: Callable[..., Any],
        priority: int = 0,
        callback: Optional[Callable[[Any], Any]] = None,
        future: Optional[Type[TaskFuture]] = None,
        lock: bool = False,
        lock_timeout: Optional[float] = 3,
        timeout: Optional[float] = None,
        gpu_boost: bool = False,
        gpu_id: int = 0,
        retry: bool = False,
        max_retries: int = 3,
        *args: Any,
        **kwargs: Any,
    ) -> TaskFuture:
        """Runs ``task(*args, **kwargs)`` in a worker process."""
        return cls._submit(True, task, priority, callback, future, lock, lock_timeout, timeout,
                           retry, max_retries, args, kwargs)

    @classmethod
    def submitThreadTask(
        cls,
        task: Callable[..., Any],
        priority: int = 0,
        callback: Optional[Callable[[Any], Any]] = None,
        future: Optional[Type[TaskFuture]] = None,
        lock: bool = False,
        lock_timeout: Optional[float] = 3,
        timeout: Optional[float] = None,
        gpu_boost: bool = False,
        gpu_id: int = 0,
        retry: bool = False,
        max_retries: int = 3,
        *args: Any,
        **kwargs: Any,
    ) -> TaskFuture:
        """Runs ``task(*args, **kwargs)`` on the thread pool (a coroutine
        function on the system's event loop)."""
        return cls._submit(False, task, priority, callback, future, lock, lock_timeout, timeout,
                           retry, max_retries, args, kwargs)

    @classmethod
    def submitSystemProcessTask(
        cls, task: Callable[..., Any], count: int = 1, *args: Any, **kwargs: Any
    ) -> Union[cf.Future, List[cf.Future]]:
        """Runs ``task`` ``count`` times in worker processes."""
        system = cls._system()
        if not callable(task):
            raise ValueError("The task must be a callable.")
        futures = [system.submit_process(task, *args, **kwargs) for _ in range(max(1, count))]
        return futures if count > 1 else futures[0]

    @classmethod
    def submitSystemThreadTask(
        cls, task: Callable[..., Any], count: int = 1, *args: Any, **kwargs: Any
    ) -> Union[cf.Future, List[cf.Future]]:
        """Runs ``task`` ``count`` times on service threads, outside the
        pool's capacity (so a service may itself submit and wait)."""
        cls._system()
        if not callable(task):
            raise ValueError("The task must be a callable.")
        if cls._SERVICE is None:
            cls._SERVICE = cf.ThreadPoolExecutor(thread_name_prefix="seedcore-service")
        futures = [cls._SERVICE.submit(task, *args, **kwargs) for _ in range(max(1, count))]
        return futures if count > 1 else futures[0]

    @classmethod
    def closeSystem(cls) -> None:
        """Shuts the system down (queued work is cancelled, running work
        finishes) and stops the main event loop."""
        global MainEventLoop
        system, cls._INSTANCE = cls._INSTANCE, None
        if system is None:
            return
        service, cls._SERVICE = cls._SERVICE, None
        if service is not None:
            service.shutdown(wait=False, cancel_futures=True)
        system.shutdown(wait=True, cancel_futures=True)
        loop = cls.MainEventLoop
        if loop is not None and not cls._QT and loop.is_running():
            loop.stop()


def _qt_loop() -> Optional[asyncio.AbstractEventLoop]:
    for name in ("PySide6", "PyQt6", "PyQt5"):
        widgets = sys.modules.get(f"{name}.QtWidgets")
        app = getattr(widgets, "QApplication", None) if widgets else None
        if app is not None and app.instance() is not None:
            import qasync  # type: ignore[import-not-found]

            loop = qasync.QEventLoop(app.instance())
            app.instance().aboutToQuit.connect(ConcurrentSystem.closeSystem)
            return loop
    return None


def ConnectConcurrentSystem(**settings: Any) -> Type[ConcurrentSystem]:
    """Builds the system from the seed's settings and the main event loop;
    call it under ``if __name__ == "__main__":``."""
    global MainEventLoop
    known = {
        "DebugMode", "Priority", "CoreProcessCount", "CoreThreadCount", "MaximumProcessCount",
        "MaximumThreadCount", "IdleCleanupThreshold", "ProcessPriority", "TaskThreshold",
        "GlobalTaskThreshold", "ExpandPolicy", "ShrinkagePolicy", "ShrinkagePolicyTimeout",
    }
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(f"ConnectConcurrentSystem() got unknown settings {unknown}")
    if "DebugMode" in settings and not isinstance(settings["DebugMode"], bool):
        raise TypeError("DebugMode must be a boolean.")
    if ConcurrentSystem._INSTANCE is not None:
        return ConcurrentSystem
    threads: dict = {}
    processes: dict = {}
    balance: dict = {}
    if settings.get("CoreThreadCount") is not None:
        threads["core"] = settings["CoreThreadCount"]
    if settings.get("MaximumThreadCount") is not None:
        threads["max"] = settings["MaximumThreadCount"]
    if settings.get("CoreProcessCount") is not None:
        processes["core"] = settings["CoreProcessCount"]
    if settings.get("MaximumProcessCount") is not None:
        processes["max"] = settings["MaximumProcessCount"]
    if settings.get("ProcessPriority") is not None:
        p = settings["ProcessPriority"]
        if p not in _PROCESS_PRIORITY:
            raise ValueError(f"ProcessPriority must be one of {sorted(_PROCESS_PRIORITY)}")
        processes["priority"] = _PROCESS_PRIORITY[p]
    if settings.get("IdleCleanupThreshold") is not None:
        threads["keep_alive"] = settings["IdleCleanupThreshold"]
    if settings.get("ExpandPolicy") is not None:
        p = settings["ExpandPolicy"]
        if p not in _EXPAND:
            raise ValueError(f"ExpandPolicy must be one of {sorted(_EXPAND)}")
        balance["expand"] = _EXPAND[p]
    if settings.get("ShrinkagePolicy") is not None:
        p = settings["ShrinkagePolicy"]
        if p not in _SHRINK:
            raise ValueError(f"ShrinkagePolicy must be one of {sorted(_SHRINK)}")
        balance["shrink"] = _SHRINK[p]
    if settings.get("ShrinkagePolicyTimeout") is not None:
        balance["shrink_timeout"] = settings["ShrinkagePolicyTimeout"]
    for section in (threads, processes):
        if "core" in section and "max" in section and section["max"] < section["core"]:
            section["max"] = section["core"]
        elif "core" in section and "max" not in section:
            section["max"] = max(section["core"], 2 * section["core"])
    loop = _qt_loop()
    ConcurrentSystem._QT = loop is not None
    if loop is None:
        try:
            loop = asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
    ConcurrentSystem._INSTANCE = _System(
        threads=threads or None, processes=processes or None, balance=balance or None
    )
    ConcurrentSystem.MainEventLoop = loop
    MainEventLoop = loop
    return ConcurrentSystem
