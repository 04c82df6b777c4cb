#!/usr/bin/env bash
# Start the seqwatch SuperLink: TLS on every API (one HTTPS port), SuperNode authentication on,
# runtime dependency installation off (the app's dependencies are installed in this environment).
#
#   server/scripts/start-superlink.sh [--port 8000] [--host 0.0.0.0] [--database state.db]
#                                     [--log-file superlink.log] [-- EXTRA flower-superlink ARGS]
#
# Environment: SEQWATCH_FEDERATION_DIR (default ./federation: ca.crt, server.pem, server.key from
# 'seqwatch-coordinator init-ca' / 'server-cert'), PYTHON (default: python3 on PATH; use the venv).
# The SuperLink replaces this shell (exec), so its PID is this script's PID. The ServerApp runs
# in the SuperLink's working directory: a relative federation.run-dir is resolved from there.
# Give --database to keep registrations and runs across restarts (default: in memory).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
py="${PYTHON:-python3}"
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="${FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION:-1}"

ours=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    *) ours+=("$1"); shift ;;
  esac
done
cmd="$(PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$py" -m server.cli \
  --dir "${SEQWATCH_FEDERATION_DIR:-federation}" superlink-command "${ours[@]}")"
eval "set -- $cmd"
echo "starting: $*" "${extra[@]}" >&2
exec "$@" "${extra[@]}"
