# Shared by the use-case scripts in this directory (source it; not run on
# its own): where the stasis binary is, and how to start a workload so
# that stasis can dump it.

# stasis: $STASIS if set, else bin/stasis of this checkout, built if missing.
STASIS=${STASIS:-}
if [ -z "$STASIS" ]; then
	STASIS=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/bin/stasis
	if [ ! -x "$STASIS" ]; then
		(cd "$(dirname "$STASIS")/.." && CGO_ENABLED=0 go build -trimpath -o bin/stasis ./cmd/stasis)
	fi
fi
[ "$(id -u)" = 0 ] || { echo "$0: run as root (stasis ptraces and restores pids)" >&2; exit 1; }

# detach CMD...: start CMD in a session of its own with nothing open but
# /dev/null (stdin) and $LOG (stdout, stderr), and set $! to its pid: a
# tree stasis dumps must not share a pipe or a terminal with the shell
# that started it (or be dumped with --external / --shell-job). It is
# disowned: the shell reaps it quietly when a dump ends it (see gone).
detach() {
	(
		for fd in /proc/self/fd/*; do
			n=${fd##*/}
			[ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-" 2>/dev/null || true
		done
		exec setsid "$@" </dev/null >>"${LOG:-/dev/null}" 2>&1
	) &
	disown
}

# gone PID: wait until PID has ended and been reaped.
gone() {
	waitfor 10 bash -c "! [ -e /proc/$1 ]"
}

# alive PID: whether PID is a running (not zombie) process.
alive() {
	[ -e "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

# waitfor SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
waitfor() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.1
	done
}

# ms: a clock in milliseconds.
ms() { echo $(($(date +%s%N) / 1000000)); }
