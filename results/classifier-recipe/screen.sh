#!/usr/bin/env bash
# The recipe screening, one lane of it: runs every arm of ARMS whose index is LANE modulo LANES,
# one after another, in this clone's workspace, and copies each arm's results to RESULTS/<arm>.
#   (setsid nohup ./screen.sh LANE LANES ARMS RESULTS >> lane-LANE.log 2>&1 &)
# Rerun the same command after an interruption: finished arms are skipped, and the arm that
# was running continues from its checkpoints (same params, same code: same run fingerprint).
# ARMS: one arm a line, "name<TAB>dvc exp run options" (-S ... -S ...).
set -euo pipefail
lane=$1 lanes=$2 arms=$(realpath "$3") results=$(realpath -m "$4")
cd "$(dirname "$0")"
source "${VENV:-/work/main/.venv}/bin/activate"   # any environment with the project installed
# The lowest priority, its scheduling group's too (see results/cifar10-reference/run.sh).
export OMP_WAIT_POLICY=PASSIVE
if [ -w /proc/self/autogroup ]; then echo 19 > /proc/self/autogroup; fi
renice -n 19 $$ > /dev/null
index=0
while IFS=$'\t' read -r name options; do
  [ -z "$name" ] && continue
  if (( index++ % lanes != lane )) || [ -e "$results/$name/done" ]; then continue; fi
  echo "$(date -u +%FT%TZ) lane $lane: $name: dvc exp run $options train_classifier"
  git checkout -q params.yaml     # each arm from the lane's params, its own -S on top
  # shellcheck disable=SC2086  (the options are words)
  dvc exp run --name "screen-$name" $options train_classifier
  mkdir -p "$results/$name"
  cp params.yaml metrics/classifier.json logs/classifier_training.json "$results/$name/"
  cp -r plots/classifier/seeds models/classifier "$results/$name/"
  touch "$results/$name/done"
done < "$arms"
git checkout -q params.yaml
echo "$(date -u +%FT%TZ) lane $lane: finished"
