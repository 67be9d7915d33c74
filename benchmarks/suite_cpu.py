#!/usr/bin/env python
"""Where the CPU of a command goes, by process role: what bounds the suite's wall time.

Runs a command (by default the suite as ``make test`` runs it) and samples
``/proc`` every ``--interval`` seconds for the command's whole process tree: the
pytest controller and xdist workers, the Ray daemons each ``ray.init`` starts, the
Ray worker processes (a Tune trial actor per fold slot per search, Serve and Ray
Data actors, idle workers), notebook kernels and the CLI subprocesses of the tests.

Method
    Each process is keyed by (pid, start time); its CPU is its last sampled
    ``utime + stime``. A process keeps the most specific role it was ever seen with,
    because a Ray worker changes its title (``ray::IDLE`` then
    ``ray::ImplicitFunc.train``) and an exiting one has none. A process that lives
    less than one interval is missed; the machine's busy CPU-seconds from
    ``/proc/stat`` over the run are printed beside the attributed sum, and the
    difference (those processes, this sampler, the kernel) is ``unattributed``.
    The shortest wall time the command's work allows on this machine is its busy
    CPU-seconds / the cores. With ``--import-cost``, the CPU-seconds of
    ``python -c "import tensorflow, keras"`` are measured first (median of 3), and
    ``fold worker imports`` = fold workers x that cost: CPU that every fold worker
    spends before it trains anything.
    With ``--by-file`` (a pytest command), a small plugin logs when each test
    starts in each pytest process, and every other process is charged to the test
    file that its nearest pytest ancestor was running when the process started (a
    worker that Ray started idle: when it became an actor). Those are the fold
    workers, Ray daemons, actors and subprocesses that the file's tests caused. A
    pytest process's own CPU goes to the file whose test it was running (its
    ``process_time`` at each test's start), and what it spent before its first
    test to start-up and collection; the xdist controller runs no test, and its
    own CPU is in no file. A notebook kernel and what it starts go to the
    notebooks' test file (the controller runs them while its workers run the
    other tests).

Linux only (it reads ``/proc``). Nothing is written but the command's own files (and
``--by-file``'s logs, in a temporary folder removed afterwards). With
``--json`` the command's output goes to stderr and stdout holds the one JSON object.

Command
    python benchmarks/suite_cpu.py --import-cost            # the suite, as make test runs it
    python benchmarks/suite_cpu.py --json -- pytest -q tests/test_e2e.py
    python benchmarks/suite_cpu.py --by-file                  # and which test files cause it
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
SUITE = [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadfile", "-q", "-p", "no:cacheprovider"]
CLOCK_PLUGIN = "_test_clock"  # benchmarks/_test_clock.py
NOTEBOOKS = "tests/test_notebooks.py"



def _is_pytest(cmdline: str) -> bool:
    """``pytest ...``, ``python .../pytest ...`` or ``python -m pytest ...``; not a path that holds "pytest"."""
    words = cmdline.split()[:3]
    return any(os.path.basename(w) in ("pytest", "py.test") for w in words[:2]) or words[1:3] == ["-m", "pytest"]

FOLD, DAEMONS, ACTOR, KERNEL, PYTEST, IDLE, OTHER = (
    "fold worker (Tune trial actor)", "Ray daemons (GCS, raylet, agents, monitors)",
    "other Ray actor (Serve, Data, stop board)", "notebook kernel", "pytest (controller and xdist workers)",
    "Ray idle worker, never an actor", "other subprocess (CLI, scripts, servers)")
# (role, a test on the command line); the first match wins, and a role earlier in this list is more specific
ROLES = [
    (FOLD, lambda c: c.startswith("ray::ImplicitFunc")),
    (DAEMONS, lambda c: any(k in c for k in ("gcs_server", "raylet/raylet", "dashboard/", "log_monitor", "monitor.py",
                                             "runtime_env", "ray::DashboardAgent", "ray::RuntimeEnvAgent"))),
    (ACTOR, lambda c: c.startswith("ray::") and not c.startswith("ray::IDLE")),
    (KERNEL, lambda c: "ipykernel_launcher" in c),
    (PYTEST, lambda c: _is_pytest(c) or "exec(eval(sys.stdin.readline()))" in c),
    (IDLE, lambda c: c.startswith("ray::IDLE") or "default_worker.py" in c),
    (OTHER, lambda c: bool(c)),
]
RANK = {name: i for i, (name, _) in enumerate(ROLES)}


def role_of(cmdline: str) -> str | None:
    """The role a command line shows, or None for an empty one (a zombie, or a process still starting)."""
    return next((name for name, test in ROLES if test(cmdline)), None)


def _read(pid: int) -> tuple[int, int, float, str] | None:
    """``(ppid, start ticks, CPU seconds, command line)`` of a live or zombie process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name in parentheses may hold spaces
    return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / TICK, cmdline


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


class Sampler(threading.Thread):
    """Samples the process tree under ``root`` until :meth:`stop`."""

    def __init__(self, root: int, interval: float):
        super().__init__(daemon=True)
        self.root, self.interval, self.done = root, interval, threading.Event()
        # (pid, start ticks) -> [role, cpu seconds, ppid, wall-clock start or when it took its role]
        self.processes: dict[tuple[int, int], list] = {}
        self.tree = {root}

    def sample(self) -> None:
        with open("/proc/uptime") as f:
            boot = time.time() - float(f.read().split()[0])  # to the 10 ms of the clock, unlike /proc/stat's btime
        seen = [(pid, info) for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                if (info := _read(pid)) is not None]
        for pid, (ppid, start, cpu, cmdline) in sorted(seen, key=lambda item: item[1][1]):  # parents first
            if pid not in self.tree and ppid not in self.tree:
                continue
            self.tree.add(pid)
            entry = self.processes.setdefault((pid, start), [None, 0.0, ppid, boot + start / TICK])
            role = role_of(cmdline)
            if role is not None and (entry[0] is None or RANK[role] < RANK[entry[0]]):
                if entry[0] is not None:  # an idle worker Ray started earlier became an actor now: it is now's
                    entry[3] = time.time()
                entry[0] = role
            entry[1] = max(entry[1], cpu)

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.sample()


def import_cost(repeats: int = 3) -> float:
    """Median CPU-seconds of a fresh ``python -c "import tensorflow, keras"``."""
    costs = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", "import tensorflow, keras"], check=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        costs.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(costs)


def by_file(processes: dict, clock_dir: str) -> dict:
    """CPU-seconds and processes per test file, from the plugin's logs (see the module's docstring)."""
    starts: dict[int, list[tuple[float, float, str]]] = {}  # pytest pid -> [(time, own CPU, test file)], in order
    for name in os.listdir(clock_dir):
        with open(os.path.join(clock_dir, name)) as f:
            for line in f:
                pid, when, cpu, nodeid = line.rstrip("\n").split("\t", 3)
                starts.setdefault(int(pid), []).append((float(when), float(cpu), nodeid.split("::")[0]))
    files: dict[str, dict] = {}

    def row(name: str) -> dict:
        return files.setdefault(name, {"processes": 0, "fold_workers": 0, "their_cpu_s": 0.0, "pytest_cpu_s": 0.0})

    for log in starts.values():  # a pytest process's own CPU, from one test's start to the next's
        row("(pytest start-up and collection)")["pytest_cpu_s"] += log[0][1]
        for (_, cpu, name), (_, later, _) in zip(log, log[1:]):
            row(name)["pytest_cpu_s"] += later - cpu
    parent = {pid: entry[2] for (pid, _), entry in processes.items()}
    role_of_pid = {pid: entry[0] for (pid, _), entry in processes.items()}
    for (pid, _), (role, cpu, _, began) in processes.items():
        if role == PYTEST:
            continue
        chain, ancestor = [pid], parent.get(pid)
        while ancestor is not None and len(chain) < 32 and ancestor not in starts:
            chain.append(ancestor)
            ancestor = parent.get(ancestor)
        if any(role_of_pid.get(p) == KERNEL for p in chain):
            name = NOTEBOOKS  # a kernel of the notebooks' small runs, or a process it started
        elif ancestor in starts:
            name = next((f for t, _, f in reversed(starts[ancestor]) if t <= began), "(pytest start-up and collection)")
        else:
            name = "(no test)"
        r = row(name)
        r["processes"] += 1
        r["fold_workers"] += role == FOLD
        r["their_cpu_s"] += cpu
    for r in files.values():
        r["their_cpu_s"], r["pytest_cpu_s"] = round(r["their_cpu_s"], 1), round(r["pytest_cpu_s"], 1)
        r["cpu_s"] = round(r["their_cpu_s"] + r["pytest_cpu_s"], 1)
    return dict(sorted(files.items(), key=lambda item: -item[1]["cpu_s"]))


def measure(command: list[str], interval: float, stdout=None, env: dict | None = None) -> dict:
    """Run ``command`` under the sampler (its output to ``stdout``): its exit code, wall time and CPU by role."""
    busy0, t0 = _busy_ticks(), time.monotonic()
    child = subprocess.Popen(command, stdout=stdout, env=env)
    sampler = Sampler(child.pid, interval)
    sampler.start()
    code = child.wait()
    sampler.stop()
    wall, busy = time.monotonic() - t0, (_busy_ticks() - busy0) / TICK
    roles = {name: {"processes": 0, "cpu_s": 0.0} for name, _ in ROLES}
    roles["unknown (never showed a command line)"] = {"processes": 0, "cpu_s": 0.0}
    for role, cpu, _, _ in sampler.processes.values():
        row = roles[role or "unknown (never showed a command line)"]
        row["processes"] += 1
        row["cpu_s"] = round(row["cpu_s"] + cpu, 1)
    attributed = sum(row["cpu_s"] for row in roles.values())
    cores = os.cpu_count() or 1
    return {"command": command, "exit_code": code, "wall_s": round(wall, 1), "cores": cores,
            "busy_cpu_s": round(busy, 1), "busy_fraction": round(busy / (wall * cores), 3),
            "attributed_cpu_s": round(attributed, 1), "unattributed_cpu_s": round(busy - attributed, 1),
            "shortest_wall_s": round(busy / cores, 1), "roles": roles, "processes": sampler.processes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.25, help="seconds between samples")
    parser.add_argument("--import-cost", action="store_true",
                        help="first measure the CPU of a fresh TensorFlow and Keras import")
    parser.add_argument("--by-file", action="store_true",
                        help="also charge the processes that tests cause to their test files (a pytest command)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("command", nargs="*", help="the command to measure (after --); default: the suite")
    args = parser.parse_args(argv)
    cost = import_cost() if args.import_cost else None
    command, env, clock_dir = list(args.command or SUITE), None, None
    if args.by_file:
        if not _is_pytest(" ".join(command)):
            parser.error(f"--by-file: expected a pytest command (pytest ... or python -m pytest ...), got {command}")
        clock_dir = tempfile.mkdtemp(prefix="suite_cpu_clock_")
        here = os.path.dirname(os.path.abspath(__file__))
        env = {**os.environ, "SUITE_CPU_CLOCK_DIR": clock_dir,
               "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
        command += ["-p", CLOCK_PLUGIN]
    # with --json, stdout holds the one JSON object and the command's own output goes to stderr
    try:
        result = measure(command, args.interval, stdout=sys.stderr if args.json else None, env=env)
        if clock_dir is not None:
            result["files"] = by_file(result["processes"], clock_dir)
    finally:
        if clock_dir is not None:
            shutil.rmtree(clock_dir, ignore_errors=True)
    del result["processes"]
    folds = result["roles"][FOLD]
    if cost is not None:
        result["import_cpu_s"] = round(cost, 2)
        result["fold_worker_imports_cpu_s"] = round(folds["processes"] * cost, 1)
    if args.json:
        print(json.dumps(result, indent=2))
        return result["exit_code"]
    print(f"\n{' '.join(result['command'])}\nexit {result['exit_code']}, wall {result['wall_s']} s on "
          f"{result['cores']} cores, machine busy {result['busy_cpu_s']} CPU-s ({result['busy_fraction']:.0%})")
    print(f"{'role':<46}{'processes':>10}{'CPU-s':>9}{'share':>7}")
    for name, row in sorted(result["roles"].items(), key=lambda item: -item[1]["cpu_s"]):
        print(f"{name:<46}{row['processes']:>10}{row['cpu_s']:>9.1f}{row['cpu_s'] / result['busy_cpu_s']:>7.1%}")
    print(f"{'unattributed (short processes, sampler, kernel)':<46}{'':>10}{result['unattributed_cpu_s']:>9.1f}")
    print(f"shortest wall this work allows on {result['cores']} cores: {result['shortest_wall_s']} s")
    if cost is not None:
        print(f"a fresh `import tensorflow, keras`: {cost:.2f} CPU-s; x {folds['processes']} fold workers = "
              f"{result['fold_worker_imports_cpu_s']} CPU-s before any fold trains")
    if "files" in result:
        print(f"\nby test file: the processes its tests caused, and the pytest process's own CPU while they ran\n"
              f"{'test file':<46}{'processes':>10}{'folds':>7}{'their CPU-s':>12}{'pytest CPU-s':>13}{'all':>8}")
        for name, row in result["files"].items():
            print(f"{name:<46}{row['processes']:>10}{row['fold_workers']:>7}{row['their_cpu_s']:>12.1f}"
                  f"{row['pytest_cpu_s']:>13.1f}{row['cpu_s']:>8.1f}")
    return result["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
