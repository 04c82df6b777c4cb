#!/usr/bin/env bash
# Start a seqwatch run on the federation's SuperLink, follow its log until it ends, and exit with
# its outcome: 0 when the run finished:completed, 1 when it failed or was stopped (flwr run itself
# exits 0 either way).
#
#   server/scripts/run.sh CONNECTION [flwr run options, e.g. --run-config "federation.run-name='r1'"]
#
# CONNECTION is the [superlink.NAME] entry that 'seqwatch-coordinator flwr-config' wrote into
# $FLWR_HOME/config.toml. The app folder is this repository (APP_DIR overrides). Running it again
# with the same federation.run-name resumes that run after its last completed round.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 CONNECTION [flwr run options]" >&2; exit 2; }
conn="$1"; shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
app="${APP_DIR:-$(cd "$here/../.." && pwd)}"
flwr="${FLWR:-flwr}"
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"
export PYTHONUNBUFFERED=1  # the log reaches the terminal line by line through tee

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
"$flwr" run "$app" "$conn" --stream "$@" | tee "$log"
run_id="$(sed -n 's/.*Successfully started run \([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)"
[ -n "$run_id" ] || { echo "run.sh: no run was started (see flwr's output above)" >&2; exit 1; }

# The log stream ends when the run has finished, so its status is final now.
status="$("$flwr" ls "$conn" --run-id "$run_id" --format json | "${PYTHON:-python3}" -c '
import json, sys
text = sys.stdin.read()
runs = json.loads(text[text.find("{"):]).get("runs") or [{}]
print(runs[0].get("status", "unknown"), runs[0].get("status-details", ""), sep="\t")
')" || { echo "run.sh: run $run_id: could not read its status ('$flwr ls $conn --run-id $run_id')" >&2; exit 1; }
state="${status%%$'\t'*}"
details="${status#*$'\t'}"
if [ "$state" = "finished:completed" ]; then
  echo "run.sh: run $run_id $state"
  exit 0
fi
echo "run.sh: run $run_id ended $state${details:+ ($details)}; its log: '$flwr log $run_id $conn --show'" >&2
exit 1
