#!/usr/bin/env bash
# The reference run, in a clone of its own (/tmp/ref-run): rerun to continue from the checkpoints.
cd "$(dirname "$0")"
source "${VENV:-/work/main/.venv}/bin/activate"   # any environment with the project installed
# Threads sleep rather than spin while they wait, at the lowest priority: work in the
# foreground takes the cores whenever it needs them, the run gets the rest.
export OMP_WAIT_POLICY=PASSIVE
exec nice -n 19 dvc repro "$@"
