#!/usr/bin/env bash
# Use case: fast start from a snapshot.
#
# A python3 service that takes a while to get ready (imports, then it
# builds its "model": a table of the primes below 3 million, and some
# "training") is started
# once, warmed up, and dumped. Then N copies of it are restored side by
# side, each with `stasis restore --pidns` (a pid namespace of its own,
# where it has its original pid, so that copies do not collide) and
# `-J net:...` (a network namespace of its own, where it listens on the
# same 127.0.0.1 port). The script prints, for a cold start and for each
# copy, the time from the start to the first answer.
#
# Usage (as root): examples/snapshot-start.sh [N]
#   STASIS=path/to/stasis (default: bin/stasis, built if missing)
#   WORK=dir (default: a new /tmp/stasis-snapshot.XXXXXX)
#   MODEL=size of the model (default 3000000: primes below it, as many
#   training steps)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
n=${1:-3}
port=8765
WORK=${WORK:-$(mktemp -d /tmp/stasis-snapshot.XXXXXX)}
tag=stasis-snap-$$
pids=() copies=()
cleanup() {
	# A copy's pid 1 (stasis' init) exits with the copy's root; its
	# `stasis restore` then ends.
	for i in $(seq 1 "$n"); do
		[ ! -e "$WORK/pid-$i" ] || kill -9 "$(cat "$WORK/pid-$i")" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	for p in "${copies[@]}"; do wait "$p" 2>/dev/null || true; done
	for i in $(seq 0 "$n"); do ip netns del "$tag-$i" 2>/dev/null || true; done
}
trap cleanup EXIT

cat >"$WORK/service.py" <<'PY'
import socket, sys, os, json, decimal, email.parser, http.client, xml.dom.minidom
port = int(sys.argv[1])
limit = int(sys.argv[2])
sieve = bytearray([1]) * limit
sieve[0:2] = b"\0\0"
for i in range(2, int(limit ** 0.5) + 1):
    if sieve[i]:
        sieve[i * i::i] = bytes(len(range(i * i, limit, i)))
primes = sum(sieve)
# "Training": a second or two of work that leaves little memory behind.
weights = [0] * 64
for i in range(limit):
    weights[i & 63] = (weights[i & 63] * 31 + i) % 1_000_003
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(16)
print("ready: %d primes" % primes, flush=True)
served = 0
while True:
    c, _ = s.accept()
    served += 1
    c.sendall(b"primes=%d model=%d pid=%d served=%d\n" % (primes, sum(weights), os.getpid(), served))
    c.close()
PY
cat >"$WORK/ask.py" <<'PY'
import socket, sys, time
end = time.time() + 60
while True:
    try:
        c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
        print(c.makefile().readline().strip())
        break
    except (ConnectionRefusedError, FileNotFoundError):
        if time.time() > end:
            raise
        time.sleep(0.01)
PY
# newns NAME: a network namespace with its loopback up.
newns() {
	ip netns add "$1"
	ip -n "$1" link set lo up
}
# ask NS: the service's answer, asked from inside network namespace NS.
ask() { nsenter --net="/run/netns/$1" python3 "$WORK/ask.py" "$port"; }

echo "== cold start: python3 service.py, until its first answer"
newns "$tag-0"
start=$(ms)
LOG=$WORK/service.log detach nsenter --net="/run/netns/$tag-0" python3 "$WORK/service.py" "$port" "${MODEL:-3000000}"
pid=$!
pids+=("$pid")
answer=$(ask "$tag-0")
cold=$(($(ms) - start))
echo "   $cold ms: $answer"

echo "== dump the warmed-up service (pid $pid)"
"$STASIS" dump -t "$pid" -D "$WORK/images" -v4 -o dump.log
gone "$pid"
echo "   images: $(du -sh "$WORK/images" | cut -f1)"

echo "== $n copies restored side by side (--pidns, each in a network namespace of its own)"
printf '   %-6s %-10s %-10s %s\n' copy "host pid" "first ms" answer
for i in $(seq 1 "$n"); do
	newns "$tag-$i"
	start=$(ms)
	"$STASIS" restore -D "$WORK/images" --pidns -J "net:/run/netns/$tag-$i" \
		--pidfile "$WORK/pid-$i" -v4 -o "restore-$i.log" >"$WORK/restore-$i.out" 2>&1 &
	copies+=($!)
	answer=$(ask "$tag-$i")
	took=$(($(ms) - start))
	printf '   %-6s %-10s %-10s %s\n' "$i" "$(cat "$WORK/pid-$i")" "$took" "$answer"
	echo "$took" >>"$WORK/times"
done
for i in $(seq 1 "$n"); do
	hp=$(cat "$WORK/pid-$i")
	alive "$hp" || { echo "copy $i (host pid $hp) is gone" >&2; exit 1; }
	ask "$tag-$i" >/dev/null
done
best=$(sort -n "$WORK/times" | head -1)
echo "== all $n copies answer; cold start $cold ms, from the snapshot $best ms at best ($WORK)"
