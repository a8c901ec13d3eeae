#!/usr/bin/env bash
# Use case: load balancing / moving a running service to another host.
#
# Three network namespaces stand in for three machines: host A and host B,
# and a client C on a bridge that reaches both. A python3 echo server runs
# on A with the service address 10.79.0.2; a client on C keeps one TCP
# connection to it and sends a numbered line every 20 ms, checking each
# echo. The server is dumped on A with --tcp-established (which keeps its
# connection in the images and drops the client's packets meanwhile), the
# service address moves from A to B as a failover would, and the server is
# restored on B: the client's connection goes on, no reset, no line lost
# or repeated. (A real move copies the images dir to the other machine,
# e.g. with rsync or `stasis page-server`, and restores there.)
#
# Usage (as root): examples/netns-move.sh [SECONDS]
#   STASIS=path/to/stasis (default: bin/stasis, built if missing)
#   WORK=dir (default: a new /tmp/stasis-move.XXXXXX)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
secs=${1:-3}
WORK=${WORK:-$(mktemp -d /tmp/stasis-move.XXXXXX)}
A=stasis-mv-$$-a B=stasis-mv-$$-b C=stasis-mv-$$-c
server=10.79.0.2 port=7007
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	for ns in $A $B $C; do ip netns del "$ns" 2>/dev/null || true; done
}
trap cleanup EXIT
inns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }

cat >"$WORK/server.py" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(4)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    while True:
        b = c.recv(65536)
        if not b:
            break
        c.sendall(b)
    c.close()
PY
cat >"$WORK/client.py" <<'PY'
import os, socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
f = c.makefile("rb")
n, longest = 0, 0.0
while not os.path.exists(sys.argv[3]):
    n += 1
    line = b"line %d\n" % n
    t = time.time()
    c.sendall(line)
    got = f.readline()
    longest = max(longest, time.time() - t)
    if got != line:
        print("FAIL: sent %r, got %r" % (line, got), flush=True)
        sys.exit(1)
    if n == 10:
        print("connected", flush=True)
    time.sleep(0.02)
print("client: %d lines echoed in order on one connection, the longest wait %.0f ms" % (n, longest * 1000), flush=True)
PY

echo "== hosts A and B, client C (network namespaces), service address $server on A"
for ns in $A $B $C; do
	ip netns add "$ns"
	ip -n "$ns" link set lo up
done
ip -n "$C" link add br0 type bridge
for h in a b; do
	ns=$A
	[ $h = b ] && ns=$B
	ip -n "$C" link add "v$h-br" type veth peer name "v$h" netns "$ns"
	ip -n "$C" link set "v$h-br" master br0 up
	ip -n "$ns" link set "v$h" up
done
ip -n "$C" link set br0 up
ip -n "$C" addr add 10.79.0.1/24 dev br0
ip -n "$A" addr add "$server/24" dev va

LOG=$WORK/server.log detach nsenter --net="/run/netns/$A" python3 "$WORK/server.py" "$server" "$port"
pid=$!
pids+=("$pid")
waitfor 10 grep -q listening "$WORK/server.log"
inns "$C" python3 "$WORK/client.py" "$server" "$port" "$WORK/stop" >"$WORK/client.log" 2>&1 &
client=$!
pids+=("$client")
waitfor 20 grep -q connected "$WORK/client.log"

echo "== dump the server on A (pid $pid), with its connection"
inns "$A" "$STASIS" dump -t "$pid" -D "$WORK/images" --tcp-established -v4 -o dump.log
gone "$pid"
echo "== move $server from A to B, restore the server on B"
# B takes the address while the bridge's port to it is down, so that
# nothing reaches B before the server is back: a packet of the client's
# that B got with no socket there would be answered by a reset, ending
# the connection. (B keeps its route: the restore reconnects the socket.)
ip -n "$A" addr del "$server/24" dev va
ip -n "$C" link set vb-br down
ip -n "$B" addr add "$server/24" dev vb
start=$(ms)
inns "$B" "$STASIS" restore -D "$WORK/images" -d --tcp-established --pidfile "$WORK/pid" -v4 -o restore.log
ip -n "$C" link set vb-br up
ip -n "$C" neigh flush dev br0
echo "   restored pid $(cat "$WORK/pid") in $(($(ms) - start)) ms, in network namespace $(ip netns identify "$(cat "$WORK/pid")")"
sleep "$secs"
touch "$WORK/stop"
if wait "$client"; then
	cat "$WORK/client.log"
	echo "== the service moved from A to B under a connected client ($WORK)"
else
	cat "$WORK/client.log" >&2
	echo "== the client lost its connection ($WORK)" >&2
	exit 1
fi
