package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"
)

// cpuBusy samples how busy all CPUs are over d, in percent: bench is
// idle meanwhile, so this is what other processes take from it.
func cpuBusy(d time.Duration) float64 {
	read := func() (idle, total uint64) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0
		}
		line, _, _ := strings.Cut(string(b), "\n")
		for i, f := range strings.Fields(line)[1:] {
			var v uint64
			fmt.Sscan(f, &v)
			total += v
			if i == 3 || i == 4 { // idle, iowait
				idle += v
			}
		}
		return idle, total
	}
	i0, t0 := read()
	time.Sleep(d)
	i1, t1 := read()
	if t1 <= t0 {
		return 0
	}
	return 100 * (1 - float64(i1-i0)/float64(t1-t0))
}

func printHeader(c config, imgRoot, stasisBin, built string, busyBefore, busyAfter float64, room []string) {
	var u unix.Utsname
	_ = unix.Uname(&u)
	src := "given with -stasis"
	if built != "" {
		src = built
	}
	fmt.Printf("stasis dump/restore benchmark, %s\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Printf("host:   Linux %s %s, %d CPUs, %s RAM, THP %s\n",
		unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Machine[:]),
		runtime.NumCPU(), fmtSize(memTotal()), thp())
	fmt.Printf("images: %s (%s), page cache hot for restore\n", imgRoot, fsType(imgRoot))
	fmt.Printf("stasis: %s (%s)\n", stasisBin, src)
	fmt.Printf("load:   CPUs %.0f%% busy with other work before the run, %.0f%% after (sampled 1 s each)\n", busyBefore, busyAfter)
	if max(busyBefore, busyAfter) > 10 {
		fmt.Printf("        WARNING: other processes compete for the CPUs; the figures are pessimistic\n")
	}
	for i, r := range room {
		head := "        "
		if i == 0 {
			head = "tasks:  "
		}
		fmt.Printf("%s%s\n", head, r)
	}
	fmt.Printf("GB/s = 1e9 bytes/s; sizes in KiB/MiB/GiB\n")
}

func printLimits(l limits, size int64, runs int) {
	fmt.Printf("\nmachine limits, measured in this run (best of %d)\n", runs)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "  memcpy: Go copy of %s between pre-faulted buffers\t%s\n", fmtSize(size), fmtRate(l.memcpy))
	fmt.Fprintf(w, "  file write: %s to a new file next to the images, 16 MiB writes, no fsync\t%s\n", fmtSize(size), fmtRate(l.write))
	fmt.Fprintf(w, "  file read: the same file read back, page cache hot\t%s\n", fmtRate(l.read))
	fmt.Fprintf(w, "  first touch of fresh anonymous memory (%s, one write per page)\t%.2f µs/page = %s\n",
		fmtSize(l.faultBytes), float64(l.fault.Nanoseconds())/1e3, fmtRate(rate(pageSize, l.fault)))
	fmt.Fprintf(w, "  restore limit: min(memcpy, file read)\t%s\n", fmtRate(l.restoreLimit()))
	fmt.Fprintf(w, "  restore limit if every page also pays a first touch: 1/(1/limit + 1/first touch)\t%s\n", fmtRate(l.restoreTouchLimit()))
	w.Flush()
}

func printResults(l limits, runs, warmup int, cases ...caseResult) {
	fmt.Printf("\nstasis commands, fresh victim per run, %d runs after %d warm-up: best (lowest time) and median\n", runs, warmup)
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "victim\tfigure\tbest\tmedian\tlimit\tratio best / median\ttarget\tmedian meets target")
	row := func(cols ...string) { fmt.Fprintln(w, strings.Join(cols, "\t")) }
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	var threads []caseResult // measured thread counts, for the slope
	for _, c := range cases {
		if c.skip != "" {
			row(c.label, "SKIPPED: see below", "", "", "", "", "", "")
			continue
		}
		var dump, ret, run []time.Duration
		var img []time.Duration // bytes, sorted the same way
		for _, s := range c.samples {
			dump = append(dump, s.dump)
			ret = append(ret, s.restoreRet)
			run = append(run, s.restoreRun)
			img = append(img, time.Duration(s.imgBytes))
		}
		dLo, dMed := minMedian(dump)
		rLo, rMed := minMedian(ret)
		uLo, uMed := minMedian(run)
		iLo, iMed := minMedian(img)
		label := c.label
		switch {
		case c.group == "" && c.size == 0:
			label = "tiny"
		case c.group == "":
			label = fmtSize(c.size)
		}
		if c.group == "threads" {
			per := func(d time.Duration) string {
				return fmtDur(time.Duration(float64(d) * 1000 / float64(c.threads)))
			}
			target, meets := "", ""
			if c.threads == threadsTargetCount {
				target = "< " + fmtDur(threadsTarget) + " (" + threadsCRIU + ")"
				meets = yes(uMed < threadsTarget)
			}
			row(label, "dump (stasis dump wall time)", fmtDur(dLo), fmtDur(dMed), "-", "-", "", "")
			row(label, "  dump per 1,000 threads", per(dLo), per(dMed), "", "", "", "")
			row(label, "restore -d, until it returns", fmtDur(rLo), fmtDur(rMed), "", "", "", "")
			row(label, "restore -d, until the victim answers", fmtDur(uLo), fmtDur(uMed), "", "", target, meets)
			row(label, "  restore per 1,000 threads (until it answers)", per(uLo), per(uMed), "", "", "", "")
			row(label, "image size (du)", fmtSize(int64(iLo)), fmtSize(int64(iMed)), "", "", "", "")
			threads = append(threads, c)
			continue
		}
		if c.size == 0 {
			row(label, "dump (stasis dump wall time)", fmtDur(dLo), fmtDur(dMed), "-", "-",
				"<= "+fmtDur(tinyDumpTarget), yes(dMed <= tinyDumpTarget))
			row(label, "restore -d, until it returns", fmtDur(rLo), fmtDur(rMed), "-", "-", "", "")
			row(label, "restore -d, until the victim answers", fmtDur(uLo), fmtDur(uMed), "-", "-",
				"<= "+fmtDur(tinyRestoreTarget), yes(uMed <= tinyRestoreTarget))
			row(label, "image size (du)", fmtSize(int64(iLo)), fmtSize(int64(iMed)), "", "", "", "")
			continue
		}
		thr := func(d time.Duration) float64 { return rate(c.size, d) }
		ratio := func(lo, med time.Duration, lim float64) string {
			return fmt.Sprintf("%.0f%% / %.0f%%", 100*thr(lo)/lim, 100*thr(med)/lim)
		}
		// The issue sets the >= 50% target for the big victim; for the
		// tree the ratio is information.
		target := fmt.Sprintf(">= %.0f%% of limit", 100*bigRatioTarget)
		meetsDump := yes(thr(dMed) >= bigRatioTarget*l.write)
		meetsRestore := yes(thr(uMed) >= bigRatioTarget*l.restoreLimit())
		answers := "restore -d, until the victim answers"
		if c.group == "tree" {
			target, meetsDump, meetsRestore = "(information)", "", ""
			answers = fmt.Sprintf("restore -d, until all %d processes answer", c.procs)
		}
		row(label, "dump (stasis dump wall time)", fmtDur(dLo), fmtDur(dMed), "", "", "", "")
		row(label, "dump throughput", fmtRate(thr(dLo)), fmtRate(thr(dMed)),
			"file write "+fmtRate(l.write), ratio(dLo, dMed, l.write), target, meetsDump)
		row(label, "restore -d, until it returns", fmtDur(rLo), fmtDur(rMed), "", "", "", "")
		row(label, answers, fmtDur(uLo), fmtDur(uMed), "", "", "", "")
		row(label, "restore throughput (until it answers)", fmtRate(thr(uLo)), fmtRate(thr(uMed)),
			"min(memcpy, read) "+fmtRate(l.restoreLimit()), ratio(uLo, uMed, l.restoreLimit()), target, meetsRestore)
		row(label, "  the same against first-touch-bound limit", "", "",
			"with first touch "+fmtRate(l.restoreTouchLimit()), ratio(uLo, uMed, l.restoreTouchLimit()), "(information)", "")
		row(label, "image size (du)", fmtSize(int64(iLo)), fmtSize(int64(iMed)), "", "", "", "")
	}
	// The cost of each further 1,000 threads, without the fixed cost of a
	// process: slope between the fewest and the most threads measured.
	if len(threads) >= 2 {
		a, z := threads[0], threads[len(threads)-1]
		label := fmt.Sprintf("%s -> %s threads", fmtCount(a.threads), fmtCount(z.threads))
		k := float64(z.threads-a.threads) / 1000
		for _, f := range []struct {
			name string
			get  func(sample) time.Duration
		}{
			{"dump: each further 1,000 threads", func(s sample) time.Duration { return s.dump }},
			{"restore (until it answers): each further 1,000", func(s sample) time.Duration { return s.restoreRun }},
		} {
			aLo, aMed := minMedian(mapSamples(a.samples, f.get))
			zLo, zMed := minMedian(mapSamples(z.samples, f.get))
			row(label, f.name, fmtDur(time.Duration(float64(zLo-aLo)/k)), fmtDur(time.Duration(float64(zMed-aMed)/k)), "", "", "", "")
		}
	}
	w.Flush()
	printVerified(cases)
}

func mapSamples(ss []sample, f func(sample) time.Duration) []time.Duration {
	var out []time.Duration
	for _, s := range ss {
		out = append(out, f(s))
	}
	return out
}

// printVerified says what every run of the scaling groups checked after
// its restore (a failed check stops bench), and what was skipped.
func printVerified(cases []caseResult) {
	var lines []string
	retries := 0
	for _, c := range cases {
		retries += c.retries
		switch {
		case c.skip != "":
			lines = append(lines, fmt.Sprintf("  %s: SKIPPED: %s", c.label, c.skip))
		case c.group == "threads":
			lines = append(lines, fmt.Sprintf("  %s: /proc/PID/task lists the %s original tids, no other; then all %s workers "+
				"(half in FUTEX_WAIT, half in sigtimedwait, %s stacks) woke up and found their tid and stack canary",
				c.label, fmtCount(c.threads+1), fmtCount(c.threads), fmtSize(threadStack)))
		case c.group == "tree":
			lines = append(lines, fmt.Sprintf("  %s: the %d pids exist with their original parents (binary tree, %d levels), one task each; "+
				"each process checked its whole %s pattern (its own, written after fork)", c.label, c.procs, depth(c.procs), fmtSize(c.memEach)))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Printf("\nchecked after every restore of the threads and tree victims (a failed check stops bench):\n")
	for _, l := range lines {
		fmt.Println(l)
	}
	if retries > 0 {
		fmt.Printf("  %d run(s) started again: a pid of the dump was taken by another process before the restore\n", retries)
	}
}

func depth(n int) int {
	d := 0
	for m := 1; n > 0; m *= 2 {
		n -= m
		d++
	}
	return d
}

// fmtCount writes n with thousands separators: 10,000.
func fmtCount(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// printScaleProfile prints the phases of the threads and tree runs, cut
// from the commands' own -v4 logs: one column per victim and, for the
// threads group, the cost of each further 1,000 threads.
func printScaleProfile(cases []caseResult, runs int) {
	var thr, tree []caseResult
	for _, c := range cases {
		if c.skip != "" || len(c.phases) == 0 {
			continue
		}
		if c.group == "threads" {
			thr = append(thr, c)
		} else {
			tree = append(tree, c)
		}
	}
	if len(thr)+len(tree) == 0 {
		return
	}
	fmt.Printf("\nwhere the time goes in the commands: each measured run above ran with -v4 -o LOG; spans are cut at the\n")
	fmt.Printf("log's records (printed in ms, taken at the middle of their ms), named after the record that opens them\n")
	fmt.Printf("and summed by name (a phase runs once per process); in restore also at what a watcher polling the root's\n")
	fmt.Printf("/proc/PID/statm every 500 µs sees. From exec to exit, so the totals are the table's. Median of %d runs\n", runs)
	for _, group := range [][]caseResult{thr, tree} {
		if len(group) == 0 {
			continue
		}
		for _, op := range []string{"dump", "restore"} {
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			var head []string
			var cols [][]span
			var tots []time.Duration
			for _, c := range group {
				var rs [][]span
				for _, p := range c.phases {
					if op == "dump" {
						rs = append(rs, p.dump)
					} else {
						rs = append(rs, p.restore)
					}
				}
				cols = append(cols, medianSpans(rs))
				_, t := minMedian(totals(rs))
				tots = append(tots, t)
				head = append(head, c.label, "")
			}
			slope := group[0].group == "threads" && len(group) >= 2
			var k float64
			if slope {
				k = float64(group[len(group)-1].threads-group[0].threads) / 1000
				head = append(head, "each further 1,000 threads")
			}
			fmt.Printf("\n%s, %s:\n", map[bool]string{true: "threads", false: "process tree"}[group[0].group == "threads"], op)
			fmt.Fprintln(w, "  phase\t"+strings.Join(head, "\t"))
			var order []string
			seen := map[string]bool{}
			for _, col := range cols {
				for _, s := range col {
					if !seen[s.name] {
						seen[s.name] = true
						order = append(order, s.name)
					}
				}
			}
			get := func(col []span, name string) time.Duration {
				for _, s := range col {
					if s.name == name {
						return s.d
					}
				}
				return 0
			}
			for _, name := range order {
				line := []string{"  " + name}
				for i, col := range cols {
					d := get(col, name)
					line = append(line, fmtDur(d), fmt.Sprintf("%.0f%%", 100*d.Seconds()/tots[i].Seconds()))
				}
				if slope {
					line = append(line, fmtDur(time.Duration(float64(get(cols[len(cols)-1], name)-get(cols[0], name))/k)))
				}
				fmt.Fprintln(w, strings.Join(line, "\t"))
			}
			line := []string{"  total (median of the runs' totals)"}
			for _, t := range tots {
				line = append(line, fmtDur(t), "")
			}
			if slope {
				line = append(line, fmtDur(time.Duration(float64(tots[len(tots)-1]-tots[0])/k)))
			}
			fmt.Fprintln(w, strings.Join(line, "\t"))
			w.Flush()
		}
	}
}

func printProfile(profs []profile, cli []caseResult, runs int) {
	if len(profs) == 0 {
		return
	}
	fmt.Printf("\nwhere the time goes: stasis.Dump / stasis.Restore in-process (the library the command wraps),\n")
	fmt.Printf("cut at the engine's -v4 log records (timed in µs) and, in restore, at what a watcher polling\n")
	fmt.Printf("/proc/PID/statm every 250 µs sees: the pid appear, its RSS pass 1%% and 99%%; median of %d runs\n", runs)
	for i, p := range profs {
		label := "tiny"
		if p.size > 0 {
			label = fmtSize(p.size)
		}
		var cliDump, cliRestore time.Duration
		if i < len(cli) {
			var d, r []time.Duration
			for _, s := range cli[i].samples {
				d = append(d, s.dump)
				r = append(r, s.restoreRet)
			}
			_, cliDump = minMedian(d)
			_, cliRestore = minMedian(r)
		}
		for _, op := range []struct {
			name string
			runs [][]span
			cli  time.Duration
		}{{"dump", p.dump, cliDump}, {"restore", p.restore, cliRestore}} {
			_, total := minMedian(totals(op.runs))
			fmt.Printf("\n%s victim, %s: %s in-process; the command took %s (median of the table's runs; the difference is exec, Go start-up and exit, plus run-to-run noise)\n",
				label, op.name, fmtDur(total), fmtDur(op.cli))
			for _, s := range medianSpans(op.runs) {
				fmt.Printf("  %-66s %10s %4.0f%%\n", s.name, fmtDur(s.d), 100*s.d.Seconds()/total.Seconds())
			}
		}
		_, sum := minMedian(p.checksum)
		fmt.Printf("  checksum.Verify of this images dir alone: %s (inside restore's start; dump's manifest re-reads the same bytes)\n", fmtDur(sum))
		for _, f := range p.failed {
			fmt.Printf("  FAILED and repeated: %s\n", f)
		}
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + fmtDur(-d)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1e3)
	default:
		return fmt.Sprintf("%.3f s", d.Seconds())
	}
}

func fmtRate(r float64) string { return fmt.Sprintf("%.2f GB/s", r/1e9) }

func fmtSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d B", n)
	}
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var kb int64
		if n, _ := fmt.Sscanf(sc.Text(), "MemTotal: %d kB", &kb); n == 1 {
			return kb << 10
		}
	}
	return 0
}

func thp() string {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil {
		return "unknown"
	}
	s := string(b)
	if i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']'); i >= 0 && j > i {
		return s[i+1 : j]
	}
	return strings.TrimSpace(s)
}

func fsType(path string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "unknown fs"
	}
	switch uint32(st.Type) {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("fs magic %#x", st.Type)
}
