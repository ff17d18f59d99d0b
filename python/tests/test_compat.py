"""TheSeedCoreConcurrentSystem's workflow through seedcore.compat."""

import os
import subprocess
import sys
import textwrap


def test_the_seed_workflow_runs_with_one_changed_import(tmp_path):
    # The seed's own example, with its import changed and shorter waits.
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent('''
        import asyncio
        import time

        from seedcore.compat import ConcurrentSystem, ConnectConcurrentSystem

        count = 0


        async def test_function(start_time: float):
            current_time = time.time()
            await asyncio.sleep(0.1)
            finish_time = time.time()
            return start_time, f"{finish_time - current_time:.3}"


        def cpu_function(x):
            return x * x


        async def test_callback(result):
            global count
            assert isinstance(result[0], float)
            count += 1
            if count == 10:
                print("callbacks", count, flush=True)
                fut = ConcurrentSystem.submitProcessTask(cpu_function, 3, None, None, False, 3, None, False, 0, False, 3, 12)
                print("process", fut.result(timeout=30), fut.taskID != "", flush=True)
                await asyncio.sleep(0.1)
                ConcurrentSystem.closeSystem()


        async def example():
            ConcurrentSystem.submitSystemThreadTask(
                ConcurrentSystem.submitThreadTask, 10, test_function, callback=test_callback, start_time=time.time()
            )


        if __name__ == "__main__":
            ConnectConcurrentSystem(Priority="HIGH", CoreProcessCount=2, MaximumProcessCount=4, CoreThreadCount=4,
                                    MaximumThreadCount=8, ExpandPolicy="AutoExpand", ShrinkagePolicy="AutoShrink")
            ConcurrentSystem.MainEventLoop.create_task(example())
            ConcurrentSystem.MainEventLoop.run_forever()
            print("closed", flush=True)
    '''))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split("\n")[:3] == ["callbacks 10", "process 144 True", "closed"], out.stdout + out.stderr


def test_process_tasks_with_callbacks_and_retries():
    import asyncio

    import tasks
    from seedcore.compat import ConcurrentSystem, ConnectConcurrentSystem

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        ConnectConcurrentSystem(CoreProcessCount=1, CoreThreadCount=2)
        got = loop.create_future()
        ConcurrentSystem.submitProcessTask(tasks.square, 1, lambda r: got.set_result(r), None,
                                           False, 3, None, False, 0, False, 3, 9)
        assert loop.run_until_complete(asyncio.wait_for(got, 30)) == 81
        failed = loop.create_future()
        ConcurrentSystem.submitThreadTask(tasks.fail, 0, lambda r: failed.set_result(r), None,
                                          False, 3, None, False, 0, False, 3, "bad")
        err = loop.run_until_complete(asyncio.wait_for(failed, 30))
        assert isinstance(err, ValueError)
    finally:
        ConcurrentSystem.closeSystem()
        loop.close()
