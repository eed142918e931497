"""How much a background training run slows work in the foreground, by its scheduling priority.

    python bench/bench_background_priority.py PID [--rounds 2]

PID is the background run's Python process (`pgrep -f stages/train_`). A fixed foreground job
(float32 matrix products on every core, in a process of its own) is timed with the background
run's scheduling group at nice 0, at nice 19 (what results/cifar10-reference/run.sh sets), and
with the run paused (SIGSTOP: the job alone), alternating over --rounds rounds; the run's group
priority is restored and the run resumed at the end. Linux with autogroups only
(/proc/sys/kernel/sched_autogroup_enabled = 1): there `nice` alone ranks processes only within
a terminal session's group, so a background run started in a session of its own keeps a fair
share of the cores whatever its nice value.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

JOB = ("import torch; a = torch.randn(1024, 1024); "
       "[a @ a for _ in range(300)]")


def group_nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def set_group_nice(pid: int, nice: int) -> None:
    Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def timed_job() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", JOB], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": str(os.cpu_count())})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pid", type=int, help="the background run's Python process")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
        sys.exit("error: kernel autogroups are off here; `nice` alone sets the priority")
    restore = group_nice(args.pid)
    times = {"run at group nice 0": [], "run at group nice 19": [], "run paused": []}
    try:
        for _ in range(args.rounds):
            for condition in times:
                paused = condition == "run paused"
                if not paused:
                    set_group_nice(args.pid, 0 if "nice 0" in condition else 19)
                os.kill(args.pid, signal.SIGSTOP if paused else signal.SIGCONT)
                times[condition].append(timed_job())
    finally:
        os.kill(args.pid, signal.SIGCONT)
        set_group_nice(args.pid, restore)
    alone = statistics.median(times["run paused"])
    for condition, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{condition:>22}: foreground job {median:6.2f} s ({median / alone:.2f}x alone)")


if __name__ == "__main__":
    main()
