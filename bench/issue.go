package main

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The issue's table (-only issue): stasis and CRIU 4.2 side by side, in one
// invocation, on the victims of issue 17 (tiny, mem1g, threads100,
// tree50, a huge memory and many open files), with stasis' peak RSS and
// the machine's memcpy and page-cache bandwidths measured in the same run.
// Whole commands are timed, as a user runs them: `dump -t PID -D DIR` and
// `restore -D DIR -d --pidfile F`. Each run starts a fresh victim per tool,
// and the tool that goes first alternates, since the memory one tool frees
// (images, victims) is what the next one's page cache gets.

//go:embed victim_files.c
var filesSource []byte

// issueVictim is one row.
type issueVictim struct {
	label string
	bin   string
	args  []string
	ready []string // files its cwd gets when it is ready
	bytes int64    // memory to copy, for the rates (0: none worth a rate)
	skip  string
}

type issueTimes struct {
	dump, restore       []time.Duration
	dumpRSS, restoreRSS []int64 // KiB
	failed              string
}

type issueRow struct {
	v     issueVictim
	tools map[string]*issueTimes
}

// issueVictims builds the victims of the table.
func (b *bencher) issueVictims(c config) ([]issueVictim, error) {
	threads, err := buildC(b.tmp, "victim_threads", threadsSource, "-pthread")
	if err != nil {
		return nil, err
	}
	tree, err := buildC(b.tmp, "victim_tree", treeSource)
	if err != nil {
		return nil, err
	}
	files, err := buildC(b.tmp, "victim_files", filesSource)
	if err != nil {
		return nil, err
	}
	vs := []issueVictim{
		{label: "tiny", bin: b.victim, args: []string{"0"}, ready: []string{"ready"}},
		{label: "mem" + sizeLabel(c.size), bin: b.victim, args: []string{strconv.FormatInt(c.size, 10)}, ready: []string{"ready"}, bytes: c.size},
		{label: "threads100", bin: threads, args: []string{"100", strconv.Itoa(threadStack)}, ready: names("ready", 1)},
		{label: fmt.Sprintf("tree%d", c.treeProcs), bin: tree, args: []string{strconv.Itoa(c.treeProcs), strconv.Itoa(1 << 20)}, ready: names("ready", c.treeProcs)},
	}
	if c.huge > 0 {
		v := issueVictim{label: "mem" + sizeLabel(c.huge), bin: b.victim, args: []string{strconv.FormatInt(c.huge, 10)}, ready: []string{"ready"}, bytes: c.huge}
		// The victim and its images in the page cache are in memory at
		// once, then the images and the restored copy, with some room for
		// everyone else.
		if need := 2*c.huge + 2<<30; memTotal() < need {
			v.skip = fmt.Sprintf("needs %s of RAM, the machine has %s", fmtSize(need), fmtSize(memTotal()))
		}
		vs = append(vs, v)
	}
	if c.files > 0 {
		vs = append(vs, issueVictim{label: fmt.Sprintf("%s open files", fmtCount(c.files)), bin: files, args: []string{strconv.Itoa(c.files)}, ready: []string{"ready"}})
	}
	if len(c.rows) == 0 {
		return vs, nil
	}
	var kept []issueVictim
	for _, v := range vs {
		if slices.ContainsFunc(c.rows, func(r string) bool { return r != "" && strings.Contains(v.label, r) }) {
			kept = append(kept, v)
		}
	}
	return kept, nil
}

func sizeLabel(n int64) string {
	switch {
	case n%(1<<30) == 0:
		return fmt.Sprintf("%dg", n>>30)
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dm", n>>20)
	}
	return strconv.FormatInt(n, 10)
}

// issueTable measures and prints the table.
func (b *bencher) issueTable(c config, criu string) error {
	vs, err := b.issueVictims(c)
	if err != nil {
		return err
	}
	tools := []string{"stasis"}
	bins := map[string]string{"stasis": b.stasis}
	if criu != "" {
		tools = append(tools, "criu")
		bins["criu"] = criu
	}
	var rows []issueRow
	for _, v := range vs {
		row := issueRow{v: v, tools: map[string]*issueTimes{}}
		for _, t := range tools {
			row.tools[t] = &issueTimes{}
		}
		if v.skip != "" {
			rows = append(rows, row)
			continue
		}
		for i := 0; i < c.warmup+c.runs; i++ {
			for k := range tools {
				t := tools[(k+i)%len(tools)] // who goes first alternates
				tt := row.tools[t]
				if tt.failed != "" {
					continue
				}
				dir := filepath.Join(b.imgRoot, fmt.Sprintf("issue-%s-%s-%d", v.label, t, i))
				d, r, drss, rrss, err := b.issueOnce(v, t, bins[t], dir)
				os.RemoveAll(dir)
				if err != nil {
					tt.failed = err.Error()
					progress("issue %s %s run %d: FAILED: %v", v.label, t, i, err)
					continue
				}
				progress("issue %s %s run %d: dump %s (RSS %d MiB), restore %s (RSS %d MiB)", v.label, t, i, fmtDur(d), drss>>10, fmtDur(r), rrss>>10)
				if i < c.warmup {
					continue
				}
				tt.dump, tt.restore = append(tt.dump, d), append(tt.restore, r)
				tt.dumpRSS, tt.restoreRSS = append(tt.dumpRSS, drss), append(tt.restoreRSS, rrss)
			}
		}
		rows = append(rows, row)
	}
	b.issueRows = rows
	return nil
}

// issueOnce starts v, dumps it with tool, restores it and kills the
// restored tree.
func (b *bencher) issueOnce(v issueVictim, tool, bin, dir string) (dump, restore time.Duration, dumpRSS, restoreRSS int64, err error) {
	cwd := filepath.Join(dir, "cwd")
	img := filepath.Join(dir, "img")
	for _, d := range []string{cwd, img} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return 0, 0, 0, 0, err
		}
	}
	cmd := exec.Command(v.bin, v.args...)
	cmd.Dir = cwd
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, 0, err
	}
	root := cmd.Process.Pid
	track(root, true)
	defer func() {
		// The tree is the victim's process group (it is a session
		// leader); the restored one too.
		_ = unix.Kill(-root, unix.SIGKILL)
		reapOrphans()
		track(root, false)
	}()
	for _, f := range v.ready {
		p := filepath.Join(cwd, f)
		for end := time.Now().Add(10 * time.Minute); ; time.Sleep(2 * time.Millisecond) {
			if _, err := os.Stat(p); err == nil {
				break
			}
			if time.Now().After(end) || !alive(root) {
				return 0, 0, 0, 0, fmt.Errorf("victim %s: no %s", v.label, f)
			}
		}
	}
	var extra []string
	if tool == "criu" {
		extra = []string{"--shell-job"} // harmless without a terminal; criu wants it for a session leader on some setups
	}
	run := func(args ...string) (time.Duration, int64, error) {
		c := exec.Command(bin, append(args, extra...)...)
		c.Dir = dir
		out, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%s.out", tool, args[0])))
		if err != nil {
			return 0, 0, err
		}
		defer out.Close()
		c.Stdout, c.Stderr = out, out
		t0 := time.Now()
		if err := c.Start(); err != nil {
			return 0, 0, err
		}
		// The rusage of a child exec'd by Go counts bench's own RSS (its
		// vfork shares bench's memory): its peak is polled instead.
		done := make(chan int64)
		go func() { done <- peakRSS(c.Process.Pid, 5*time.Millisecond) }()
		err = c.Wait()
		d := time.Since(t0)
		rss := <-done
		if err != nil {
			b, _ := os.ReadFile(out.Name())
			return d, rss, fmt.Errorf("%s %s: %v: %s", tool, args[0], err, lastLines(string(b), 3))
		}
		return d, rss, nil
	}
	if dump, dumpRSS, err = run("dump", "-t", strconv.Itoa(root), "-D", img); err != nil {
		return
	}
	_ = cmd.Wait()
	reapOrphans()
	for end := time.Now().Add(10 * time.Second); alive(root) && time.Now().Before(end); time.Sleep(time.Millisecond) {
	}
	pidfile := filepath.Join(dir, "restored.pid")
	if restore, restoreRSS, err = run("restore", "-D", img, "-d", "--pidfile", pidfile); err != nil {
		return
	}
	if !alive(root) {
		err = errors.New("the restored root is not running")
	}
	return
}

// printIssue prints the table of the issue.
func printIssue(rows []issueRow, l limits, runs, warmup int) {
	fmt.Printf("\nstasis and CRIU 4.2, whole commands, fresh victim per run, %d runs after %d warm-up (first tool alternating): median (min-max)\n", runs, warmup)
	fmt.Printf("machine: memcpy %s, page-cache write %s, page-cache read %s (best of %d, same run)\n\n", fmtRate(l.memcpy), fmtRate(l.write), fmtRate(l.read), runs)
	fmt.Println("| victim | stasis dump | CRIU 4.2 dump | stasis restore | CRIU 4.2 restore | CRIU/stasis dump, restore | stasis peak RSS dump, restore |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range rows {
		if r.v.skip != "" {
			fmt.Printf("| %s | SKIPPED: %s | | | | | |\n", r.v.label, r.v.skip)
			continue
		}
		s, c := r.tools["stasis"], r.tools["criu"]
		cell := func(t *issueTimes, ds []time.Duration) string {
			switch {
			case t == nil:
				return "-"
			case t.failed != "":
				return "FAILED: " + t.failed
			case len(ds) == 0:
				return "-"
			}
			lo, med := minMedian(ds)
			hi := slicesMax(ds)
			out := fmt.Sprintf("%s (%s-%s)", fmtDur(med), fmtDur(lo), fmtDur(hi))
			if r.v.bytes > 0 && med > 0 {
				out += ", " + fmtRate(rate(r.v.bytes, med))
			}
			return out
		}
		if s.failed != "" || len(s.dump) == 0 {
			fmt.Printf("| %s | FAILED: %s | | | | | |\n", r.v.label, s.failed)
			continue
		}
		ratio := func(a, b []time.Duration) string {
			if len(a) == 0 || len(b) == 0 || (c != nil && c.failed != "") {
				return "-"
			}
			_, ma := minMedian(a)
			_, mb := minMedian(b)
			return fmt.Sprintf("%.1fx", ma.Seconds()/mb.Seconds())
		}
		var cd, cr []time.Duration
		if c != nil {
			cd, cr = c.dump, c.restore
		}
		_, drss := minMedianInt(s.dumpRSS)
		_, rrss := minMedianInt(s.restoreRSS)
		fmt.Printf("| %s | %s | %s | %s | %s | %s, %s | %d MiB, %d MiB |\n", r.v.label,
			cell(s, s.dump), cell(c, cd), cell(s, s.restore), cell(c, cr),
			ratio(cd, s.dump), ratio(cr, s.restore), drss>>10, rrss>>10)
	}
	for _, r := range rows {
		s := r.tools["stasis"]
		if r.v.bytes == 0 || len(s.dump) == 0 {
			continue
		}
		_, d := minMedian(s.dump)
		_, rs := minMedian(s.restore)
		fmt.Printf("\n%s: stasis dump %s = %.0f%% of page-cache write; restore %s = %.0f%% of page-cache read",
			r.v.label, fmtRate(rate(r.v.bytes, d)), 100*rate(r.v.bytes, d)/l.write,
			fmtRate(rate(r.v.bytes, rs)), 100*rate(r.v.bytes, rs)/l.read)
	}
	fmt.Println()
}

// peakRSS polls pid's VmHWM (KiB) until it exits and returns the last.
func peakRSS(pid int, every time.Duration) int64 {
	var hwm int64
	path := fmt.Sprintf("/proc/%d/status", pid)
	for {
		b, err := os.ReadFile(path)
		if err != nil {
			return hwm
		}
		i := strings.Index(string(b), "VmHWM:")
		if i < 0 {
			return hwm // a zombie
		}
		var kb int64
		fmt.Sscan(string(b[i+len("VmHWM:"):]), &kb)
		hwm = max(hwm, kb)
		time.Sleep(every)
	}
}

func slicesMax(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func minMedianInt(xs []int64) (lo, med int64) {
	ds := make([]time.Duration, len(xs))
	for i, x := range xs {
		ds[i] = time.Duration(x)
	}
	a, b := minMedian(ds)
	return int64(a), int64(b)
}

// criuPath is the CRIU to compare with: flag, or the default if it exists;
// "" for none.
func criuPath(flag string) string {
	switch flag {
	case "off":
		return ""
	case "":
		flag = criuDefault
	}
	if _, err := os.Stat(flag); err != nil {
		progress("issue: no CRIU to compare with: %v", err)
		return ""
	}
	return flag
}
