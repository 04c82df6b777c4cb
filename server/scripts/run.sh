#!/usr/bin/env bash
# Start a seqwatch run on the federation's SuperLink and follow its log until it ends.
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
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"
exec "${FLWR:-flwr}" run "$app" "$conn" --stream "$@"
