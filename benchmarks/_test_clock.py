"""A pytest plugin for ``suite_cpu.py --by-file``: when each test starts, in the process that runs it.

Appends ``pid<TAB>time<TAB>node id`` to a file of its own in ``$SUITE_CPU_CLOCK_DIR``.
``pytest_runtest_protocol`` runs where the test runs (an xdist worker, not the
controller), before the test's fixtures are set up.
"""

import os
import time

_log = None


def pytest_runtest_protocol(item, nextitem):
    global _log
    if _log is None:
        _log = open(os.path.join(os.environ["SUITE_CPU_CLOCK_DIR"], f"{os.getpid()}.tsv"), "a", buffering=1)
    _log.write(f"{os.getpid()}\t{time.time()}\t{item.nodeid}\n")
