"""Run authproxy or a bench proxy script on a chosen event loop, so one run can compare both.

    _launch.py uvloop|asyncio authproxy ARGS...      authproxy's own CLI (proxy.cli.main)
    _launch.py uvloop|asyncio script FILE ARGS...    a script such as naive_proxy.py

`asyncio` hides uvloop even when it is installed (authproxy picks uvloop up by itself whenever it
can be imported); `uvloop` installs uvloop's policy first, so aiohttp's run_app uses it too.
"""

import asyncio
import runpy
import sys

loop, kind, *rest = sys.argv[1:]
if loop == "asyncio":
    sys.modules["uvloop"] = None  # type: ignore[assignment]  # makes `import uvloop` fail
elif loop == "uvloop":
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
else:
    sys.exit(f"unknown loop {loop!r}")

if kind == "authproxy":
    from proxy.cli import main

    sys.argv = ["authproxy", *rest]
    sys.exit(main(rest))
elif kind == "script":
    sys.argv = rest
    runpy.run_path(rest[0], run_name="__main__")
else:
    sys.exit(f"unknown kind {kind!r}")
