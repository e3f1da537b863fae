#!/usr/bin/env bash
# Start `illume serve` on the demo models (a free loopback port, an API key), run the
# official openai Python client against it, then stop it with SIGTERM and require exit 0.
# Usage: scripts/serve-check.sh PATH/TO/illume PATH/TO/python-with-openai
set -euo pipefail
illume="$1"
python="$2"
here="$(cd "$(dirname "$0")" && pwd)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

ILLUME_API_KEY=ci-key "$illume" --backend flex serve --port 0 2>"$log" &
pid=$!
# The server prints its address once it listens (the demo models load on first use).
for _ in $(seq 600); do
  addr="$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$log")"
  [ -n "$addr" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "illume serve exited early" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "illume serve did not start" >&2; kill "$pid"; exit 1; }

status=0
"$python" "$here/openai-client-check.py" "$addr" ci-key || status=$?
kill -TERM "$pid"
wait "$pid" || { echo "illume serve exited with $? after SIGTERM" >&2; cat "$log"; exit 1; }
[ "$status" = 0 ] || { cat "$log"; exit "$status"; }
echo "illume serve stopped cleanly on SIGTERM"
