#!/usr/bin/env bash
# Entry point of every container of the cluster (under tini): starts munged, then runs
# slurmctld (`controller`) or slurmd (`node`) in the foreground, logging to the container's
# output.
set -euo pipefail

install -o munge -g munge -m 755 -d /run/munge
runuser -u munge -- /usr/sbin/munged
case ${1:-} in
  controller) exec slurmctld -D ;;
  node) exec slurmd -D ;;
  *) echo "node.sh: usage: node.sh controller|node" >&2; exit 2 ;;
esac
