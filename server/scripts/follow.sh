#!/usr/bin/env bash
# List the runs on the federation's SuperLink, or follow one run's log.
#
#   server/scripts/follow.sh CONNECTION            # runs with their status
#   server/scripts/follow.sh CONNECTION RUN_ID     # stream that run's log (Ctrl-C stops following only)
#   server/scripts/follow.sh CONNECTION nodes      # SuperNodes and their status (online/offline)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 CONNECTION [RUN_ID|nodes]" >&2; exit 2; }
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"
flwr="${FLWR:-flwr}"
case "${2:-}" in
  "") exec "$flwr" ls "$1" ;;
  nodes) exec "$flwr" supernode list "$1" ;;
  *) exec "$flwr" log "$2" "$1" --stream ;;
esac
