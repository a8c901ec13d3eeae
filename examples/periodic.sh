#!/usr/bin/env bash
# Use case: periodic checkpoints of a long computation.
#
# A long job (python3 hashing with all its state in memory) is checkpointed
# every PERIOD seconds with `stasis dump -R` (it runs on) into numbered
# dirs 1, 2, 3...: the first a full dump with --track-mem, each next one
# with --prev-images-dir ../N-1 --track-mem, so that it holds only the
# pages written since (its "parent" link names the dir before). Then the
# job is killed, as a crash or a lost machine would, and restored from the
# newest dir: it goes on from that checkpoint, not from the start, and its
# result is the one of an uninterrupted run.
#
# Usage (as root): examples/periodic.sh [STEPS] [PERIOD] [CHECKPOINTS]
#   STASIS=path/to/stasis (default: bin/stasis, built if missing)
#   WORK=dir (default: a new /var/tmp/stasis-periodic.XXXXXX)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
steps=${1:-500}
period=${2:-1}
count=${3:-3}
WORK=${WORK:-$(mktemp -d /var/tmp/stasis-periodic.XXXXXX)}
# STEPS steps of 2000 hashes, each followed by a 10 ms pause: the job
# lasts at least STEPS/100 s however fast the machine.
cat >"$WORK/job.py" <<'PY'
import hashlib, os, sys, time
n, out = int(sys.argv[1]), sys.argv[2]
h = b"periodic"
seen = []
for step in range(1, n + 1):
    for _ in range(2000):
        h = hashlib.sha256(h).digest()
    seen.append(h[:4])
    time.sleep(0.01)
with open(out + ".tmp", "w") as f:
    f.write("%s %d %s\n" % (h.hex(), len(seen), hashlib.sha256(b"".join(seen)).hexdigest()[:16]))
os.rename(out + ".tmp", out)
PY

echo "== the job, checkpointed every ${period}s, and an uninterrupted run beside it for reference"
python3 "$WORK/job.py" "$steps" "$WORK/reference" &
reference=$!
LOG=$WORK/job.log detach python3 "$WORK/job.py" "$steps" "$WORK/result"
pid=$!
for k in $(seq 1 "$count"); do
	sleep "$period"
	[ ! -e "$WORK/result" ] || { echo "the job finished before checkpoint $k: give more STEPS" >&2; exit 1; }
	prev=()
	[ "$k" = 1 ] || prev=(--prev-images-dir "../$((k - 1))")
	start=$(ms)
	"$STASIS" dump -t "$pid" -D "$WORK/$k" -R --track-mem "${prev[@]}" -v4 -o dump.log
	echo "   checkpoint $k: $(($(ms) - start)) ms, $(du -sh --apparent-size "$WORK/$k" | cut -f1) (${prev[*]:-full})"
done

echo "== the job is killed (a crash): restored from the newest checkpoint, $WORK/$count"
kill -9 "$pid" 2>/dev/null && [ ! -e "$WORK/result" ] || { echo "the job finished before the crash: give more STEPS" >&2; exit 1; }
gone "$pid"
start=$(ms)
"$STASIS" restore -D "$WORK/$count" -d --pidfile "$WORK/pid" -v4 -o restore.log
echo "   restored pid $(cat "$WORK/pid") in $(($(ms) - start)) ms"
waitfor 120 test -e "$WORK/result" || { echo "no result" >&2; exit 1; }
wait "$reference"
echo "   result:    $(cat "$WORK/result")"
echo "   reference: $(cat "$WORK/reference")"
if cmp -s "$WORK/result" "$WORK/reference"; then
	echo "== identical ($WORK)"
else
	echo "== DIFFERENT ($WORK)" >&2
	exit 1
fi
