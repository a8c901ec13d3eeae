#!/bin/bash
# usage: mk.sh NAME "dumpflags" victim args...
name=$1; flags=$2; shift 2
w=/tmp/fz/work/$name; rm -rf $w /tmp/fz/seeds/$name; mkdir -p $w; chmod 777 $w
setsid "$@" </dev/null >>$w/log 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- 10>&- 11>&- 12>&- 13>&- 250>&- 251>&- 252>&- 253>&- 254>&- 255>&- &
pid=$!
for i in $(seq 200); do [ -e $w/ready ] && break; sleep 0.05; done
[ -e $w/ready ] || { echo "$name not ready"; cat $w/log; kill -9 $pid; exit 1; }
[ -n "$PRE" ] && eval "$PRE"
/tmp/fz/stasis dump -t $pid -D /tmp/fz/seeds/$name $flags -v4 -o /tmp/fz/work/$name.dump.log || { echo "$name dump failed"; tail -5 /tmp/fz/work/$name.dump.log; }
kill -9 -$pid 2>/dev/null; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
ls /tmp/fz/seeds/$name | tr '\n' ' '; echo
