#!/usr/bin/env bash
# Start the seqwatch SuperLink: TLS on every API (one HTTPS port), SuperNode authentication on,
# runtime dependency installation off (the app's dependencies are installed in this environment).
#
#   server/scripts/start-superlink.sh [--port 8000] [--host 0.0.0.0] [--database state.db]
#                                     [--log-file superlink.log] [-- EXTRA flower-superlink ARGS]
#   server/scripts/start-superlink.sh --help
#
# Environment: SEQWATCH_FEDERATION_DIR (default ./federation: ca.crt, server.pem, server.key from
# 'seqwatch-coordinator init-ca' / 'server-cert'), PYTHON (default: python3 on PATH; use the venv).
# The SuperLink replaces this shell (exec), so its PID is this script's PID. The ServerApp runs
# in the SuperLink's working directory: a relative federation.run-dir is resolved from there.
# Give --database to keep registrations and runs across restarts (default: in memory).
set -euo pipefail

usage() {
  cat <<USAGE
usage: $0 [--port PORT] [--host HOST] [--database FILE] [--log-file FILE]
          [--isolation subprocess|process] [--runtime-dependency-install] [--dir DIR]
          [-- EXTRA flower-superlink ARGS]

Starts flower-superlink with TLS on every API (one HTTPS port, default 8000) and SuperNode
authentication, as 'seqwatch-coordinator superlink-command' prints it (same options: see
'seqwatch-coordinator superlink-command --help'). Arguments after '--' go to flower-superlink.

Environment: SEQWATCH_FEDERATION_DIR (the federation folder with ca.crt, server.pem and
server.key; default ./federation; --dir overrides it), PYTHON (default: python3 on PATH; use
the venv). Give --database to keep registrations and runs across restarts (default: in memory).
USAGE
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
py="${PYTHON:-python3}"
export FLWR_TELEMETRY_ENABLED="${FLWR_TELEMETRY_ENABLED:-0}"
export FLWR_DISABLE_UPDATE_CHECK="${FLWR_DISABLE_UPDATE_CHECK:-1}"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="${FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION:-1}"

ours=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--he|--hel|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) ours+=("$1"); shift ;;
  esac
done

# A failing superlink-command (bad option, missing certificate) has already printed its one-line
# error: stop with its exit status. Only a flower-superlink command line (shell-quoted by
# shlex.join) is ever eval'ed.
status=0
cmd="$(PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$py" -m server.cli \
  --dir "${SEQWATCH_FEDERATION_DIR:-federation}" superlink-command "${ours[@]}")" || status=$?
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
case "$cmd" in
  "flower-superlink "*) ;;
  *)
    printf '%s\n' "$cmd" >&2
    echo "$0: error: 'superlink-command' printed no flower-superlink command line (see above)" >&2
    exit 2
    ;;
esac
eval "set -- $cmd"
echo "starting: $*" "${extra[@]}" >&2
exec "$@" "${extra[@]}"
