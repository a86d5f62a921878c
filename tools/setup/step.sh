#!/usr/bin/env bash
# One step of `make setup`: prints what it does on one line, runs the command with its output (pip's,
# apt-get's) into a log file, and says ok with the time taken; on failure, names the log, shows its
# last lines and exits with the command's code.
#   step.sh LOG "what it does" command [args...]
set -uo pipefail

log=$1 what=$2
shift 2
mkdir -p "$(dirname "$log")"
printf '  %s ... ' "$what"
start=$(date +%s)
{ echo "== $(date -Is) $what: $*"; } >>"$log"
"$@" >>"$log" 2>&1
code=$?
if [ "$code" -eq 0 ]; then
  echo "ok ($(( $(date +%s) - start )) s)"
  exit 0
fi
echo "failed (exit code $code)"
echo "error: $what failed; the whole output is in $log, its end:" >&2
tail -n 20 "$log" | sed 's/^/    /' >&2
exit "$code"
