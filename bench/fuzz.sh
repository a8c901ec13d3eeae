#!/bin/bash
# bench/fuzz.sh: run every fuzz target of the module for a fixed budget and
# print, per target, the inputs tried and whether it crashed (goal: 0).
# Not a CI test: `go test` runs only the seeds; this really fuzzes.
#
#   bench/fuzz.sh [-budget 30s] [-minimize 1s] [-run REGEXP] [-pkg ./internal/files]
#
# go test can fuzz one target at a time, so each runs alone:
#   go test -run '^$' -fuzz '^FuzzX$' -fuzztime BUDGET -fuzzminimizetime MIN PKG
# go test's default minimization of each new interesting input (60s) would
# eat a short budget, and its execs are not counted: -minimize bounds it.
# The execs figure is go test's last progress line, a lower bound (the
# workers' last batch is not in it).
# A crash leaves its input in PKG/testdata/fuzz/FuzzX/: fix the decoder and
# commit that file, which then runs as a seed in every `go test`.
set -u
budget=30s
minimize=1s
run=.
pkgs=./...
while [ $# -gt 0 ]; do
	case $1 in
	-budget) budget=$2; shift 2 ;;
	-minimize) minimize=$2; shift 2 ;;
	-run) run=$2; shift 2 ;;
	-pkg) pkgs=$2; shift 2 ;;
	*) echo "usage: $0 [-budget 30s] [-minimize 1s] [-run REGEXP] [-pkg PKG]" >&2; exit 2 ;;
	esac
done
cd "$(dirname "$0")/.." || exit 2
logdir=$(mktemp -d /tmp/stasis-fuzz.XXXXXX)

# Package directory and target name of every fuzz target, from the sources.
targets=$(go list -f '{{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' $pkgs |
	while read -r dir files; do
		for f in $files; do
			sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(f \*testing\.F).*/\1/p' "$dir/$f" | sed "s|^|$dir |"
		done
	done | grep -E " .*${run}" | sort)

printf '%-28s %-22s %12s %10s  %s\n' package target execs execs/s result
total=0 crashes=0 flakes=0 n=0
start=$(date +%s)
while read -r dir name; do
	[ -n "$dir" ] || continue
	pkg=./${dir#"$PWD"/}
	log=$logdir/$name.log
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$budget" -fuzzminimizetime "$minimize" "$pkg" >"$log" 2>&1
	rc=$?
	# The last progress line has the total: "fuzz: elapsed: 30s, execs: 12345 (...)".
	execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | awk '{print $2}')
	execs=${execs:-0}
	fsecs=$(grep -o 'elapsed: [0-9]*s' "$log" | tail -1 | grep -o '[0-9]*')
	rate=$([ "${fsecs:-0}" -gt 0 ] && echo $((execs / fsecs)) || echo 0)
	if [ $rc -eq 0 ]; then
		result=ok
	elif ! grep -q 'Failing input written' "$log" && grep -q '^    context deadline exceeded$' "$log"; then
		# go1.26's fuzz coordinator may fail a target at the end of
		# -fuzztime having found nothing (golang/go#75804, fixed in
		# go1.27): no input, nothing to reproduce.
		flakes=$((flakes + 1))
		result="ok (go#75804 shutdown race, no input)"
	else
		crashes=$((crashes + 1))
		input=$(grep -o 'testdata/fuzz/[^ ]*' "$log" | head -1)
		result="CRASH ${input:-(see $log)}"
	fi
	total=$((total + execs))
	n=$((n + 1))
	printf '%-28s %-22s %12d %10d  %s\n' "${pkg#./}" "$name" "$execs" "$rate" "$result"
done <<<"$targets"
printf '%d targets, budget %s each, %d inputs tried, %d crashed, %d shutdown races, %ds in all; logs in %s\n' \
	"$n" "$budget" "$total" "$crashes" "$flakes" $(($(date +%s) - start)) "$logdir"
[ $crashes -eq 0 ]
