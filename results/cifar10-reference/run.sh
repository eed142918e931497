#!/usr/bin/env bash
# The reference run, in a clone of its own (/tmp/ref-run): rerun to continue from the checkpoints.
cd "$(dirname "$0")"
source "${VENV:-/work/main/.venv}/bin/activate"   # any environment with the project installed
# Threads sleep rather than spin while they wait, at the lowest priority: work in the
# foreground takes the cores whenever it needs them, the run gets the rest. With the kernel's
# autogroups on (/proc/sys/kernel/sched_autogroup_enabled), `nice` only ranks processes within
# one terminal session's group, and each session's group gets a fair share of the cores; so the
# group's own priority is lowered too: start the run in a session of its own (setsid, README),
# not in the terminal you work in.
export OMP_WAIT_POLICY=PASSIVE
if [ -w /proc/self/autogroup ]; then echo 19 > /proc/self/autogroup; fi
exec nice -n 19 dvc repro "$@"
