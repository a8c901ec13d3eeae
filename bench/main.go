package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// puppetArg is what stasis restore execs its own binary with (see
// internal/puppet.PuppetArg). In the in-process profile that binary is
// bench: it never runs (it is stopped at the exec), but if it ever did it
// must not start a benchmark.
const puppetArg = "__stasis_puppet"

// Targets of the issue.
const (
	tinyDumpTarget    = 10 * time.Millisecond
	tinyRestoreTarget = 20 * time.Millisecond
	bigRatioTarget    = 0.5
)

type config struct {
	dir       string
	size      int64
	runs      int
	warmup    int
	stasis    string
	profile   bool
	keep      bool
	only      map[string]bool // groups to run
	threads   []int           // thread counts of the threads group
	treeProcs int
	treeMem   int64
	// killsafe group
	killPoints int
	criu       string
	// issue group
	huge  int64    // memory of the huge row (0: none)
	files int      // open files of the files row (0: none)
	rows  []string // issue: the rows to measure (a label contains one), all if empty
}

// groups are the victims bench can measure, in the order they run;
// defaultGroups run without -only (killsafe takes ~10 min more).
var (
	groups        = []string{"tiny", "big", "threads", "tree", "killsafe", "issue"}
	defaultGroups = groups[:4]
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == puppetArg {
		os.Exit(2)
	}
	// Go's exec passes on every fd inherited without CLOEXEC, and stasis
	// refuses victims holding fds it cannot restore (pipes).
	_ = unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)

	var c config
	size := "1GiB"
	flag.StringVar(&c.dir, "dir", "", "where the images go (a temp dir is made inside; default /var/tmp)")
	flag.StringVar(&size, "size", size, "memory of the big victim (bytes, or with K/M/G/KiB/MiB/GiB)")
	flag.IntVar(&c.runs, "runs", 3, "repetitions of each measurement")
	flag.IntVar(&c.warmup, "warmup", 1, "unmeasured dump+restore cycles per victim before the measured ones")
	flag.StringVar(&c.stasis, "stasis", "", "stasis binary to measure (default: build ./cmd/stasis of this module)")
	flag.BoolVar(&c.profile, "profile", true, "also time the engine's phases: in-process for tiny and big (stasis.Dump/Restore with a µs phase log), from the commands' -v4 logs for threads and tree")
	flag.BoolVar(&c.keep, "keep", false, "keep the temp dirs")
	only := flag.String("only", strings.Join(defaultGroups, ","), "groups to measure, comma-separated: "+strings.Join(groups, ", "))
	threads := flag.String("threads", "1000,10000", "thread counts of the threads group, comma-separated")
	flag.IntVar(&c.treeProcs, "tree-procs", 50, "processes of the tree group")
	treeMem := flag.String("tree-mem", "64MiB", "memory of each process of the tree group")
	flag.IntVar(&c.killPoints, "kill-points", 100, "killsafe: SIGKILLs of a dump per tool")
	flag.StringVar(&c.criu, "criu", "", "killsafe, issue: CRIU binary to compare with (default "+criuDefault+"; off: none)")
	huge := flag.String("huge", "8GiB", "issue: memory of the huge row (0: no such row)")
	flag.IntVar(&c.files, "files", 100000, "issue: open files of the files row (0: no such row)")
	rows := flag.String("rows", "", "issue: only the rows whose label contains one of these, comma-separated (e.g. mem8g,files; default all)")
	flag.Parse()
	if *rows != "" {
		c.rows = strings.Split(*rows, ",")
	}
	var err error
	if c.size, err = parseSize(size); err != nil || c.size < pageSize {
		fmt.Fprintf(os.Stderr, "bench: bad -size %q\n", size)
		os.Exit(2)
	}
	c.only = map[string]bool{}
	for _, g := range strings.Split(*only, ",") {
		if g = strings.TrimSpace(g); g == "" {
			continue
		}
		if !slices.Contains(groups, g) {
			fmt.Fprintf(os.Stderr, "bench: -only: unknown group %q (groups: %s)\n", g, strings.Join(groups, ", "))
			os.Exit(2)
		}
		c.only[g] = true
	}
	if len(c.only) == 0 {
		fmt.Fprintln(os.Stderr, "bench: -only selects no group")
		os.Exit(2)
	}
	for _, t := range strings.Split(*threads, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(t))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: bad -threads %q\n", *threads)
			os.Exit(2)
		}
		c.threads = append(c.threads, n)
	}
	slices.Sort(c.threads)
	c.threads = slices.Compact(c.threads)
	if c.huge, err = parseSize(*huge); err != nil {
		fmt.Fprintf(os.Stderr, "bench: bad -huge %q\n", *huge)
		os.Exit(2)
	}
	if c.treeMem, err = parseSize(*treeMem); err != nil || c.treeMem < pageSize || c.treeProcs < 1 {
		fmt.Fprintf(os.Stderr, "bench: bad -tree-procs %d / -tree-mem %q\n", c.treeProcs, *treeMem)
		os.Exit(2)
	}
	if c.warmup < 0 {
		c.warmup = 0
	}
	if c.runs < 1 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be at least 1")
		os.Exit(2)
	}
	if err := run(c); err != nil {
		killLive()
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(c config) error {
	if os.Geteuid() != 0 {
		return errors.New("must run as root (stasis needs ptrace and clone3 set_tid)")
	}
	// Restored victims are re-parented to the nearest child subreaper when
	// stasis restore -d exits: bench, which can then wait for them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	tmp, err := os.MkdirTemp("", "stasis-bench-")
	if err != nil {
		return err
	}
	parent := c.dir
	if parent == "" {
		parent = "/var/tmp"
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	imgRoot, err := os.MkdirTemp(parent, "stasis-bench-")
	if err != nil {
		return err
	}
	cleanup := func() {
		killLive()
		if !c.keep {
			os.RemoveAll(tmp)
			os.RemoveAll(imgRoot)
		}
	}
	defer cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	go func() {
		s := <-sigs
		cleanup()
		fmt.Fprintln(os.Stderr, "bench: interrupted by", s)
		os.Exit(1)
	}()

	victimBin, err := buildVictim(tmp)
	if err != nil {
		return err
	}
	var scale []scaleCase
	var room []string // how many threads the machine allows, for the header
	if c.only["threads"] {
		bin, err := buildC(tmp, "victim_threads", threadsSource, "-pthread")
		if err != nil {
			return err
		}
		for _, n := range c.threads {
			sc := scaleCase{group: "threads", label: fmtCount(n) + " threads", key: fmt.Sprintf("threads%d", n),
				bin: bin, args: []string{strconv.Itoa(n), strconv.Itoa(threadStack)}, procs: 1, threads: n}
			why, lims := threadRoom(n)
			sc.skip = why
			if len(room) == 0 {
				room = append(room, lims)
			}
			if why == "" {
				room = append(room, sc.label+": fit")
			} else {
				room = append(room, sc.label+": DO NOT FIT: "+why)
			}
			scale = append(scale, sc)
		}
	}
	if c.only["tree"] {
		bin, err := buildC(tmp, "victim_tree", treeSource)
		if err != nil {
			return err
		}
		scale = append(scale, scaleCase{group: "tree", label: fmt.Sprintf("tree %d x %s", c.treeProcs, fmtSize(c.treeMem)),
			key: "tree", bin: bin, args: []string{strconv.Itoa(c.treeProcs), strconv.FormatInt(c.treeMem, 10)},
			procs: c.treeProcs, memEach: c.treeMem})
	}
	stasisBin, built := c.stasis, ""
	if stasisBin == "" {
		if stasisBin, built, err = buildStasis(tmp); err != nil {
			return err
		}
	} else if stasisBin, err = filepath.Abs(stasisBin); err != nil {
		return err
	}

	progress("sampling CPU load of other processes")
	busyBefore := cpuBusy(time.Second)
	var lim limits
	if c.only["big"] || c.only["tree"] || c.only["issue"] {
		if lim, err = measureLimits(imgRoot, c.size, c.runs); err != nil {
			return err
		}
	}
	b := &bencher{stasis: stasisBin, victim: victimBin, tmp: tmp, imgRoot: imgRoot, runs: c.runs, warmup: c.warmup,
		logProfile: c.profile}
	var cases []caseResult
	type basic struct {
		name string
		size int64
	}
	var basics []basic
	if c.only["tiny"] {
		basics = append(basics, basic{"tiny", 0})
	}
	if c.only["big"] {
		basics = append(basics, basic{"big", c.size})
	}
	for _, k := range basics {
		r, err := b.measure(k.name, k.size)
		if err != nil {
			return err
		}
		cases = append(cases, r)
	}
	var prof []profile
	if c.profile {
		for _, k := range basics {
			p, err := b.profile(k.name, k.size)
			if err != nil {
				return err
			}
			prof = append(prof, p)
		}
	}
	var scaled []caseResult
	for _, sc := range scale {
		r, err := b.measureScale(sc)
		if err != nil {
			return err
		}
		scaled = append(scaled, r)
	}

	if c.only["issue"] {
		if err := b.issueTable(c, criuPath(c.criu)); err != nil {
			return err
		}
	}

	var kills []killResult
	if c.only["killsafe"] {
		if kills, err = b.killSafe(c); err != nil {
			return err
		}
	}

	busyAfter := cpuBusy(time.Second)
	progress("done")
	printHeader(c, imgRoot, stasisBin, built, busyBefore, busyAfter, room)
	if c.only["big"] || c.only["tree"] {
		printLimits(lim, c.size, c.runs)
	}
	if len(cases)+len(scaled) > 0 {
		printResults(lim, c.runs, c.warmup, append(cases, scaled...)...)
	}
	if kills != nil {
		printKillSafe(kills, c.size)
	}
	if b.issueRows != nil {
		printIssue(b.issueRows, lim, c.runs, c.warmup)
	}
	if c.profile && len(cases)+len(scaled) > 0 {
		printProfile(prof, cases, c.runs)
		printScaleProfile(scaled, c.runs)
	}
	return nil
}

// buildStasis builds ./cmd/stasis of the module bench runs in, so that the
// figures belong to the source next to them, and says which source.
func buildStasis(tmp string) (bin, version string, err error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		return "", "", errors.New("not inside the stasis module: run from the checkout or pass -stasis")
	}
	version = "built from " + filepath.Dir(mod)
	// Read-only git: no index refresh, other engineers share the checkout.
	git := func(args ...string) string {
		cmd := exec.Command("git", append([]string{"-C", filepath.Dir(mod)}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0")
		out, _ := cmd.Output()
		return strings.TrimSpace(string(out))
	}
	if head := git("rev-parse", "--short", "HEAD"); head != "" {
		version += " at " + head
		if git("status", "--porcelain", "--untracked-files=no") != "" {
			version += " plus uncommitted changes"
		}
	}
	bin = filepath.Join(tmp, "stasis")
	progress("building %s/cmd/stasis", filepath.Dir(mod))
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/stasis")
	cmd.Dir = filepath.Dir(mod)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build ./cmd/stasis: %v\n%s", err, out)
	}
	return bin, version, nil
}

type bencher struct {
	stasis, victim, tmp, imgRoot string
	runs, warmup                 int
	logProfile                   bool // scaling groups: run the commands with -v4 -o LOG and cut their phases
	issueRows                    []issueRow
}

// sample is one dump + restore of one fresh victim.
type sample struct {
	dump       time.Duration // wall time of stasis dump
	restoreRet time.Duration // wall time of stasis restore -d
	restoreRun time.Duration // until the restored victim answered a signal
	imgBytes   int64         // du of the images dir
	tasks      int           // scaling groups: tasks found back after the restore
}

type caseResult struct {
	name    string
	size    int64 // memory of the victim (all its processes)
	samples []sample

	// Scaling groups.
	group   string // "threads" or "tree"; "" for tiny and big
	label   string
	procs   int
	threads int
	memEach int64
	skip    string // why the machine cannot run it
	retries int    // runs started again: a pid was taken between dump and restore
	phases  []phaseRun
}

func (b *bencher) measure(name string, size int64) (caseResult, error) {
	res := caseResult{name: name, size: size}
	// This VM pays far more for memory the guest never touched before
	// (see the first write try on stderr); a warm-up cycle lets the
	// measured ones see the steady state, as the best-of limits do.
	for i := range b.warmup {
		progress("%s victim (%s): warm-up %d of %d", name, fmtSize(size), i+1, b.warmup)
		s, err := b.once(name, size, -1-i)
		if err != nil {
			return res, fmt.Errorf("%s victim, warm-up: %w", name, err)
		}
		progress("  (warm-up) dump %s, restore -d returned %s, victim answered %s",
			fmtDur(s.dump), fmtDur(s.restoreRet), fmtDur(s.restoreRun))
	}
	for i := range b.runs {
		progress("%s victim (%s): run %d of %d", name, fmtSize(size), i+1, b.runs)
		s, err := b.once(name, size, i)
		if err != nil {
			return res, fmt.Errorf("%s victim, run %d: %w", name, i+1, err)
		}
		progress("  dump %s, restore -d returned %s, victim answered %s, images %s",
			fmtDur(s.dump), fmtDur(s.restoreRet), fmtDur(s.restoreRun), fmtSize(s.imgBytes))
		res.samples = append(res.samples, s)
	}
	return res, nil
}

func (b *bencher) once(name string, size int64, i int) (s sample, err error) {
	v, err := startVictim(b.victim, filepath.Join(b.tmp, fmt.Sprintf("victim-%s-%d", name, i)), size)
	if err != nil {
		return s, err
	}
	defer v.close()
	imgs := filepath.Join(b.imgRoot, fmt.Sprintf("%s-%d", name, i))
	// The next run allocates its page cache afresh, as a dump does.
	defer os.RemoveAll(imgs)

	if s.dump, err = b.stasisCmd("dump", "-t", strconv.Itoa(v.pid), "-D", imgs); err != nil {
		return s, err
	}
	if err := v.reapDumped(); err != nil {
		return s, err
	}
	if s.imgBytes, err = du(imgs); err != nil {
		return s, err
	}
	pidfile := filepath.Join(b.tmp, "restored.pid")
	os.Remove(pidfile)
	v.drain()
	t0 := time.Now()
	s.restoreRet, err = b.stasisCmd("restore", "-D", imgs, "-d", "--pidfile", pidfile)
	if err != nil {
		return s, err
	}
	track(v.pid, true)
	if err := v.ask(unix.SIGUSR1, "ack", time.Minute); err != nil {
		return s, err
	}
	s.restoreRun = time.Since(t0)
	if got, _ := os.ReadFile(pidfile); strings.TrimSpace(string(got)) != strconv.Itoa(v.pid) {
		return s, fmt.Errorf("pidfile says %q, victim was %d", strings.TrimSpace(string(got)), v.pid)
	}
	if err := v.verify(); err != nil {
		return s, err
	}
	v.killRestored()
	return s, nil
}

// stasisCmd runs stasis and returns the wall time from fork to exit.
func (b *bencher) stasisCmd(args ...string) (time.Duration, error) {
	// A file, not a pipe: a pipe would make Wait also wait for whatever
	// inherited it.
	errf, err := os.CreateTemp(b.tmp, "stasis-stderr-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(errf.Name())
	defer errf.Close()
	cmd := exec.Command(b.stasis, args...)
	cmd.Stdout, cmd.Stderr = errf, errf
	t0 := time.Now()
	err = cmd.Run()
	d := time.Since(t0)
	if err != nil {
		out, _ := os.ReadFile(errf.Name())
		return d, fmt.Errorf("stasis %s: %v\n%s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return d, nil
}

// du is what du -s reports, in bytes: allocated blocks, not file sizes.
func du(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		total += st.Blocks * 512
		return nil
	})
	return total, err
}

func parseSize(s string) (int64, error) {
	units := []struct {
		suf  string
		mult int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suf) {
			s, mult = strings.TrimSuffix(s, u.suf), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size")
	}
	return n * mult &^ (pageSize - 1), nil
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// minMedian returns the minimum and the median.
func minMedian(ds []time.Duration) (lo, med time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	if n%2 == 1 {
		return s[0], s[n/2]
	}
	return s[0], (s[n/2-1] + s[n/2]) / 2
}
