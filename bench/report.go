package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
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

func printHeader(c config, imgRoot, stasisBin, built string, busyBefore, busyAfter float64) {
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

func printResults(l limits, size int64, runs, warmup int, cases ...caseResult) {
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
	for _, c := range cases {
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
		label := "tiny"
		if c.size > 0 {
			label = fmtSize(c.size)
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
		target := fmt.Sprintf(">= %.0f%% of limit", 100*bigRatioTarget)
		row(label, "dump (stasis dump wall time)", fmtDur(dLo), fmtDur(dMed), "", "", "", "")
		row(label, "dump throughput", fmtRate(thr(dLo)), fmtRate(thr(dMed)),
			"file write "+fmtRate(l.write), ratio(dLo, dMed, l.write), target, yes(thr(dMed) >= bigRatioTarget*l.write))
		row(label, "restore -d, until it returns", fmtDur(rLo), fmtDur(rMed), "", "", "", "")
		row(label, "restore -d, until the victim answers", fmtDur(uLo), fmtDur(uMed), "", "", "", "")
		row(label, "restore throughput (until it answers)", fmtRate(thr(uLo)), fmtRate(thr(uMed)),
			"min(memcpy, read) "+fmtRate(l.restoreLimit()), ratio(uLo, uMed, l.restoreLimit()), target,
			yes(thr(uMed) >= bigRatioTarget*l.restoreLimit()))
		row(label, "  the same against first-touch-bound limit", "", "",
			"with first touch "+fmtRate(l.restoreTouchLimit()), ratio(uLo, uMed, l.restoreTouchLimit()), "(information)", "")
		row(label, "image size (du)", fmtSize(int64(iLo)), fmtSize(int64(iMed)), "", "", "", "")
	}
	w.Flush()
}

func printProfile(profs []profile, cli []caseResult, runs int) {
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
