"""A pytest plugin for ``suite_cpu.py --by-file``: when each test starts, in the process that runs it.

Appends ``pid<TAB>time<TAB>process CPU seconds<TAB>node id`` to a file of its own
in ``$SUITE_CPU_CLOCK_DIR``, and a last line with the node id ``END`` when the
process's session ends. ``pytest_runtest_protocol`` runs where the test runs (an
xdist worker, not the controller), before the test's fixtures are set up.
"""

import os
import time

_log = None


def _write(nodeid: str) -> None:
    global _log
    if _log is None:
        _log = open(os.path.join(os.environ["SUITE_CPU_CLOCK_DIR"], f"{os.getpid()}.tsv"), "a", buffering=1)
    _log.write(f"{os.getpid()}\t{time.time()}\t{time.process_time()}\t{nodeid}\n")


def pytest_runtest_protocol(item, nextitem):
    _write(item.nodeid)


def pytest_sessionfinish(session, exitstatus):
    if _log is not None:
        _write("END")
