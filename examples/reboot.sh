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
# Usage (as root): examples/reboot.sh [STEPS]
#   STASIS=path/to/stasis (default: bin/stasis, built if missing)
#   WORK=dir (default: a new /var/tmp/stasis-reboot.XXXXXX)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
steps=${1:-300}
WORK=${WORK:-$(mktemp -d /var/tmp/stasis-reboot.XXXXXX)}
# STEPS steps of 2000 hashes, each followed by a 10 ms pause (so that the
# job lasts at least STEPS/100 s however fast the machine), the progress
# into the pipe, the step number to stderr.
cat >"$WORK/compute.py" <<'PY'
import hashlib, sys, time
h = b"stasis"
for step in range(1, int(sys.argv[1]) + 1):
    for _ in range(2000):
        h = hashlib.sha256(h).digest()
    print(step, h.hex(), flush=True)
    print("step", step, file=sys.stderr, flush=True)
    time.sleep(0.01)
print("final", h.hex(), flush=True)
PY
job="python3 $WORK/compute.py $steps | sha256sum > \$0.tmp && mv \$0.tmp \$0"

echo "== the computation, and an uninterrupted run beside it for reference"
sh -c "$job" "$WORK/reference" 2>/dev/null &
reference=$!
LOG=$WORK/job.log detach sh -c "$job" "$WORK/result"
pid=$!
waitfor 60 grep -q "^step $((steps / 10))$" "$WORK/job.log"
[ ! -e "$WORK/result" ] || { echo "it finished before the dump: give more STEPS" >&2; exit 1; }
echo "== dump it at step $(grep -c ^step "$WORK/job.log") of $steps"
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
wait "$reference"
echo "   result:    $(cat "$WORK/result")"
echo "   reference: $(cat "$WORK/reference")"
if cmp -s "$WORK/result" "$WORK/reference"; then
	echo "== identical: nothing was lost ($WORK)"
else
	echo "== DIFFERENT ($WORK)" >&2
	exit 1
fi
