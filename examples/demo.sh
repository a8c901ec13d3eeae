#!/usr/bin/env bash
# Checkpoint a running counter, kill it, restore it, and show that it
# carried on with the same PID and count. Run as root (make demo).
set -euo pipefail
cd "$(dirname "$0")/.."
stasis=bin/stasis
CGO_ENABLED=0 go build -trimpath -o "$stasis" ./cmd/stasis
command -v gcc >/dev/null || { echo "demo: gcc is needed to build the sample program (apt-get install gcc)" >&2; exit 1; }
work=$(mktemp -d /tmp/stasis-demo.XXXXXX)
gcc -O2 -o "$work/counter" examples/counter.c

# Start it in its own session with nothing open but /dev/null: stasis
# refuses fds it cannot restore yet (such as a pipe inherited from a CI
# runner) and sessions whose leader is not dumped (see -j).
(
	for fd in /proc/self/fd/*; do
		n=${fd##*/}
		[ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-" 2>/dev/null || true
	done
	exec setsid "$work/counter" "$work/counter.log" </dev/null >/dev/null 2>&1
) &
pid=$!
sleep 1
echo "== counter running as pid $pid:"; tail -n 2 "$work/counter.log"

echo "== stasis dump -t $pid -D $work/images"
$stasis dump -t "$pid" -D "$work/images" -v4 -o dump.log
wait "$pid" 2>/dev/null || true
echo "   dumped and killed; images:"; ls "$work/images" | sed 's/^/     /'
echo "   last line before restore: $(tail -n 1 "$work/counter.log")"
sleep 1

echo "== stasis restore -D $work/images -d"
$stasis restore -D "$work/images" -d --pidfile "$work/pid" -v4 -o restore.log
sleep 1
echo "== restored as pid $(cat "$work/pid"); the counter carried on from where it was:"; tail -n 6 "$work/counter.log"
kill "$(cat "$work/pid")"
echo "== demo done (files in $work)"
