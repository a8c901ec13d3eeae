#!/usr/bin/env bash
# Use case: reboot or update the kernel without losing work.
#
# A long computation (a pipeline: sh, python3 hashing, sha256sum reading
# its progress through a pipe) is dumped to disk with `stasis dump`, which
# ends every process of it. What a reboot would do to it is done here:
# the processes are gone, dirty data is synced and the page cache dropped
# (echo 3 > /proc/sys/vm/drop_caches), so the restore reads the images
# from the disk. `stasis restore -d` brings the pipeline back with its pids
# and it finishes; its result is compared with an uninterrupted run's.
# To really reboot in between, keep $WORK (on a disk that survives the
# reboot, /var/tmp by default, not a tmpfs) and run the restore line after
# the reboot; the files the pipeline has open must be there, unchanged.
#
# Usage (as root): examples/reboot.sh [ITERATIONS]
#   STASIS=path/to/stasis (default: bin/stasis, built if missing)
#   WORK=dir (default: a new /var/tmp/stasis-reboot.XXXXXX)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
iter=${1:-3000000}
WORK=${WORK:-$(mktemp -d /var/tmp/stasis-reboot.XXXXXX)}
cat >"$WORK/compute.py" <<'PY'
import hashlib, sys
n = int(sys.argv[1])
h = b"stasis"
for i in range(1, n + 1):
    h = hashlib.sha256(h).digest()
    if i % 20000 == 0:
        print(i, h.hex(), flush=True)
print("final", h.hex(), flush=True)
PY
job="python3 $WORK/compute.py $iter | sha256sum > \$0.tmp && mv \$0.tmp \$0"

echo "== an uninterrupted run, for reference"
start=$(ms)
sh -c "$job" "$WORK/reference"
took=$(($(ms) - start))
echo "   $(cat "$WORK/reference") in ${took} ms"

echo "== the same computation, checkpointed mid-way"
LOG=$WORK/job.log detach sh -c "$job" "$WORK/result"
pid=$!
sleep $(awk "BEGIN { print $took / 3000 }")
[ ! -e "$WORK/result" ] || { echo "it finished before the dump: give more ITERATIONS" >&2; exit 1; }
"$STASIS" dump -t "$pid" -D "$WORK/images" -v4 -o dump.log
echo "   dumped pid $pid and its children into $WORK/images ($(du -sh "$WORK/images" | cut -f1))"
echo "== as at a reboot: every process gone, data synced, page cache dropped"
for p in $("$STASIS" show "$WORK/images/pstree.img" | sed -n 's/^ *"pid": \([0-9]*\),$/\1/p'); do
	gone "$p" || { echo "pid $p is still there" >&2; exit 1; }
	echo "   pid $p: gone"
done
sync
echo 3 >/proc/sys/vm/drop_caches

echo "== stasis restore -D $WORK/images -d"
start=$(ms)
"$STASIS" restore -D "$WORK/images" -d -v4 -o restore.log --pidfile "$WORK/pid"
echo "   restored pid $(cat "$WORK/pid") in $(($(ms) - start)) ms"
waitfor 120 test -e "$WORK/result" || { echo "no result" >&2; exit 1; }
echo "   result:    $(cat "$WORK/result")"
echo "   reference: $(cat "$WORK/reference")"
if cmp -s "$WORK/result" "$WORK/reference"; then
	echo "== identical: nothing was lost ($WORK)"
else
	echo "== DIFFERENT ($WORK)" >&2
	exit 1
fi
