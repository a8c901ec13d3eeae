package main

import (
	"cmp"
	_ "embed"
	"encoding/binary"
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

	"github.com/stasis-cr/stasis/internal/linux"
)

// The two scaling groups: one process with many threads, and a tree of
// processes with memory of their own. Their victims name their files
// WHAT-K for process K of the victim (0 is the one bench starts).

//go:embed victim_threads.c
var threadsSource []byte

//go:embed victim_tree.c
var treeSource []byte

// Target of the issue for the threads group: CRIU needs ~90 s to restore
// 10,000 threads.
const (
	threadsTargetCount = 10000
	threadsTarget      = 5 * time.Second
	threadsCRIU        = "CRIU ~90 s"
)

// threadStack is each worker's stack: "a little stack".
const threadStack = 64 << 10

// buildC compiles one embedded victim source with gcc.
func buildC(tmp, name string, src []byte, extra ...string) (string, error) {
	path := filepath.Join(tmp, name+".c")
	bin := filepath.Join(tmp, name)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		return "", err
	}
	args := append([]string{"-O2", "-Wall", "-o", bin, path}, extra...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("gcc %s.c: %v\n%s", name, err, out)
	}
	return bin, nil
}

// scaleCase is one victim of the threads or tree group.
type scaleCase struct {
	group   string // "threads" or "tree"
	label   string // first column of the table
	key     string // in temp dir names
	bin     string
	args    []string
	procs   int   // processes of the victim
	threads int   // worker threads (threads group)
	memEach int64 // memory of each process (tree group)
	skip    string
}

func (sc scaleCase) tasks() int { return sc.procs + sc.threads }

// taskInfo is what bench records of one process of a victim before the
// dump and checks after the restore.
type taskInfo struct {
	pid, ppid int
	tids      []int
}

// phaseRun is one run's spans, cut from the command's -v4 log.
type phaseRun struct {
	dump, restore []span
}

// threadRoom says why this machine cannot run one more process with n
// threads ("" if it can), and what its limits are. Limits: kernel.threads-max and pid_max against
// the tasks that exist now, RLIMIT_NPROC (which the kernel does not apply
// to root), the pids cgroup and vm.max_map_count (two mappings per thread:
// stack and guard page).
func threadRoom(n int) (why, limits string) {
	readInt := func(path string) int64 {
		b, err := os.ReadFile(path)
		if err != nil {
			return -1
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 1 << 62
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return -1
		}
		return v
	}
	tasks := int64(-1)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		// "0.00 0.01 0.05 1/345 12345": running/existing tasks.
		if f := strings.Fields(string(b)); len(f) >= 4 {
			if _, t, ok := strings.Cut(f[3], "/"); ok {
				tasks, _ = strconv.ParseInt(t, 10, 64)
			}
		}
	}
	need := int64(n + 1)
	var whys, parts []string
	threadsMax := readInt("/proc/sys/kernel/threads-max")
	pidMax := readInt("/proc/sys/kernel/pid_max")
	parts = append(parts, fmt.Sprintf("threads-max %d, pid_max %d, %d tasks exist now", threadsMax, pidMax, tasks))
	if threadsMax > 0 && tasks >= 0 && tasks+need > threadsMax {
		whys = append(whys, fmt.Sprintf("kernel.threads-max %d < %d existing tasks + %d (raise /proc/sys/kernel/threads-max)", threadsMax, tasks, need))
	}
	// Pids below 300 are not reused after a wrap; restore also needs the
	// same tids free again.
	if pidMax > 0 && tasks >= 0 && tasks+need > pidMax-300 {
		whys = append(whys, fmt.Sprintf("pid_max %d leaves no room for %d more tasks next to %d existing ones (raise /proc/sys/kernel/pid_max)", pidMax, need, tasks))
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &rl); err == nil {
		lim := "unlimited"
		if rl.Cur != unix.RLIM_INFINITY {
			lim = strconv.FormatUint(rl.Cur, 10)
		}
		switch {
		case os.Geteuid() == 0:
			parts = append(parts, "RLIMIT_NPROC "+lim+" (the kernel does not apply it to root)")
		case rl.Cur != unix.RLIM_INFINITY && tasks >= 0 && uint64(tasks+need) > rl.Cur:
			parts = append(parts, "RLIMIT_NPROC "+lim)
			whys = append(whys, fmt.Sprintf("RLIMIT_NPROC %d may not allow %d more tasks (ulimit -u)", rl.Cur, need))
		default:
			parts = append(parts, "RLIMIT_NPROC "+lim)
		}
	}
	if cg, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
			f := strings.SplitN(line, ":", 3)
			if len(f) != 3 {
				continue
			}
			var dir string
			switch {
			case f[0] == "0" && f[1] == "":
				dir = filepath.Join("/sys/fs/cgroup", f[2])
			case slices.Contains(strings.Split(f[1], ","), "pids"):
				dir = filepath.Join("/sys/fs/cgroup/pids", f[2])
			default:
				continue
			}
			max, cur := readInt(filepath.Join(dir, "pids.max")), readInt(filepath.Join(dir, "pids.current"))
			if max < 0 || max >= 1<<62 {
				continue
			}
			parts = append(parts, fmt.Sprintf("cgroup %s pids.max %d (%d in use)", dir, max, cur))
			if cur+need > max {
				whys = append(whys, fmt.Sprintf("cgroup pids.max %d < %d in use + %d (%s)", max, cur, need, dir))
			}
		}
	}
	if mc := readInt("/proc/sys/vm/max_map_count"); mc > 0 && int64(2*n+100) > mc {
		whys = append(whys, fmt.Sprintf("vm.max_map_count %d < %d mappings (a stack and a guard page per thread)", mc, 2*n+100))
	}
	return strings.Join(whys, "; "), strings.Join(parts, ", ")
}

// measureScale runs the warm-up and measured cycles of one scaling case.
// A run whose restore finds one of its pids taken by another process
// (possible between dump and restore on a shared machine with a small
// pid_max) is started again, and counted.
func (b *bencher) measureScale(sc scaleCase) (caseResult, error) {
	res := caseResult{name: sc.key, group: sc.group, label: sc.label, size: sc.memEach * int64(sc.procs),
		procs: sc.procs, threads: sc.threads, memEach: sc.memEach, skip: sc.skip}
	if sc.skip != "" {
		progress("%s: skipped: %s", sc.label, sc.skip)
		return res, nil
	}
	for i := -b.warmup; i < b.runs; i++ {
		what := fmt.Sprintf("run %d of %d", i+1, b.runs)
		if i < 0 {
			what = fmt.Sprintf("warm-up %d of %d", i+b.warmup+1, b.warmup)
		}
		var s sample
		var pr phaseRun
		var err error
		for try := 1; ; try++ {
			progress("%s: %s", sc.label, what)
			s, pr, err = b.onceScale(sc, i)
			if err == nil || !errors.Is(err, errPidTaken) || try == 3 {
				break
			}
			res.retries++
			progress("  %v; starting this run again", err)
		}
		if err != nil && errors.Is(err, errSetup) && len(res.samples) == 0 && i == -b.warmup {
			// This machine cannot run it (pthread_create or fork failed,
			// typically EAGAIN): reported in the table, not fatal.
			res.skip = err.Error()
			progress("%s: skipped: %s", sc.label, res.skip)
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("%s, %s: %w", sc.label, what, err)
		}
		progress("  dump %s, restore -d returned %s, victim answered %s, images %s, %d tasks verified",
			fmtDur(s.dump), fmtDur(s.restoreRet), fmtDur(s.restoreRun), fmtSize(s.imgBytes), s.tasks)
		if i >= 0 {
			res.samples = append(res.samples, s)
			if b.logProfile {
				res.phases = append(res.phases, pr)
			}
		}
	}
	return res, nil
}

var errSetup = errors.New("the victim could not start")

var errPidTaken = errors.New("a pid of the dump was taken by another process before the restore")

// onceScale is one dump + restore of a fresh victim of a scaling case.
func (b *bencher) onceScale(sc scaleCase, i int) (s sample, pr phaseRun, err error) {
	dir := filepath.Join(b.tmp, fmt.Sprintf("victim-%s-%d", sc.key, i))
	v, err := startScale(sc, dir)
	if err != nil {
		return s, pr, err
	}
	defer v.close()
	imgs := filepath.Join(b.imgRoot, fmt.Sprintf("%s-%d", sc.key, i))
	defer os.RemoveAll(imgs)
	var vsz int64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", v.root)); err == nil {
		fmt.Sscan(string(b), &vsz)
	}

	dumpLog := filepath.Join(b.tmp, "dump.log")
	restoreLog := filepath.Join(b.tmp, "restore.log")
	logArgs := func(path string) []string {
		os.Remove(path)
		if !b.logProfile {
			return nil
		}
		return []string{"-v4", "-o", path}
	}
	t0, dur, err := b.stasisCmdAt(append([]string{"dump", "-t", strconv.Itoa(v.root), "-D", imgs}, logArgs(dumpLog)...)...)
	s.dump = dur
	if err != nil {
		return s, pr, err
	}
	if b.logProfile {
		if pr.dump, err = logSpans(dumpLog, t0, t0.Add(dur), "start: exec, check target, seize the tree (until its first record)", dumpNames); err != nil {
			return s, pr, err
		}
	}
	if err := v.reapDumped(); err != nil {
		return s, pr, err
	}
	if s.imgBytes, err = du(imgs); err != nil {
		return s, pr, err
	}
	pages, _ := filepath.Glob(filepath.Join(imgs, "pages-*.img"))
	var pagesBytes int64
	for _, p := range pages {
		if st, err := os.Stat(p); err == nil {
			pagesBytes += st.Size()
		}
	}
	// The root's share of the pages: all of them with one process.
	fill := pagesBytes / pageSize
	if sc.procs > 1 {
		fill = sc.memEach / pageSize
	}

	pidfile := filepath.Join(b.tmp, "restored.pid")
	os.Remove(pidfile)
	v.w.drain()
	args := append([]string{"restore", "-D", imgs, "-d", "--pidfile", pidfile}, logArgs(restoreLog)...)
	var rec recorder
	stop, watched := make(chan struct{}), make(chan struct{})
	if b.logProfile {
		go func() { watchScale(v.root, vsz, fill, &rec, stop); close(watched) }()
	} else {
		close(watched)
	}
	t0, dur, err = b.stasisCmdAt(args...)
	close(stop)
	<-watched
	s.restoreRet = dur
	if err != nil {
		if strings.Contains(err.Error(), "pid already in use") {
			err = fmt.Errorf("%w: %v", errPidTaken, err)
		}
		return s, pr, err
	}
	for _, p := range v.procs {
		track(p.pid, true)
	}
	v.restored = true
	if err := v.askAll(unix.SIGUSR1, "ack", time.Minute); err != nil {
		return s, pr, err
	}
	s.restoreRun = time.Since(t0)
	if got, _ := os.ReadFile(pidfile); strings.TrimSpace(string(got)) != strconv.Itoa(v.root) {
		return s, pr, fmt.Errorf("pidfile says %q, victim was %d", strings.TrimSpace(string(got)), v.root)
	}
	if s.tasks, err = v.checkTasks(); err != nil {
		return s, pr, err
	}
	if err := v.askAll(unix.SIGUSR2, "ok", 2*time.Minute); err != nil {
		return s, pr, err
	}
	if b.logProfile {
		if pr.restore, err = logSpans(restoreLog, t0, t0.Add(dur), "start: exec, read + verify images, puppet, clone3 (until the pid exists)", restoreNames); err != nil {
			return s, pr, err
		}
		pr.restore = mergeWatch(pr.restore, &rec, t0)
	}
	return s, pr, v.killAll()
}

// stasisCmdAt is stasisCmd that also returns when it started.
func (b *bencher) stasisCmdAt(args ...string) (time.Time, time.Duration, error) {
	t0 := time.Now()
	d, err := b.stasisCmd(args...)
	return t0, d, err
}

// scaleVictim is a started victim of a scaling case: procs processes, the
// first a child of bench in its own session.
type scaleVictim struct {
	cmd      *exec.Cmd
	root     int
	procs    []taskInfo
	w        *dirWatch
	restored bool
}

func startScale(sc scaleCase, dir string) (*scaleVictim, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	w, err := watchDir(dir)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(sc.bin, sc.args...)
	cmd.Dir = dir
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.close()
		return nil, err
	}
	v := &scaleVictim{cmd: cmd, root: cmd.Process.Pid, w: w}
	track(v.root, true)
	fail := func(err error) (*scaleVictim, error) {
		v.close()
		return nil, err
	}
	if err := w.wait(names("ready", sc.procs), 10*time.Minute, func() error {
		if !alive(v.root) {
			return fmt.Errorf("victim %d died during its setup", v.root)
		}
		return nil
	}); err != nil {
		return fail(fmt.Errorf("%w: %v", errSetup, err))
	}
	for k := range sc.procs {
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("ready-%d", k)))
		if err != nil {
			return fail(err)
		}
		p := taskInfo{ppid: os.Getpid()}
		if n, _ := fmt.Sscan(string(b), &p.pid, &p.ppid); n < 1 {
			return fail(fmt.Errorf("victim process %d: ready-%d says %q", k, k, b))
		}
		track(p.pid, true)
		v.procs = append(v.procs, p)
	}
	for k := range v.procs {
		if v.procs[k].tids, err = tids(v.procs[k].pid); err != nil {
			return fail(err)
		}
	}
	if got := countTids(v.procs); got != sc.tasks() {
		return fail(fmt.Errorf("victim %d has %d tasks, want %d", v.root, got, sc.tasks()))
	}
	return v, nil
}

func names(what string, n int) []string {
	var out []string
	for k := range n {
		out = append(out, fmt.Sprintf("%s-%d", what, k))
	}
	return out
}

func countTids(procs []taskInfo) int {
	n := 0
	for _, p := range procs {
		n += len(p.tids)
	}
	return n
}

// tids lists /proc/PID/task, sorted.
func tids(pid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range ents {
		if t, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out, nil
}

func ppidOf(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return strconv.Atoi(f[1])
}

// checkTasks compares the restored victim with what it was: every pid
// with its parent, every tid of every process, none more.
func (v *scaleVictim) checkTasks() (int, error) {
	n := 0
	for k, p := range v.procs {
		if !alive(p.pid) {
			return n, fmt.Errorf("restored process %d (#%d of the victim) does not exist", p.pid, k)
		}
		if pp, err := ppidOf(p.pid); err != nil || pp != p.ppid {
			return n, fmt.Errorf("restored process %d: parent %d, was %d (%v)", p.pid, pp, p.ppid, err)
		}
		got, err := tids(p.pid)
		if err != nil {
			return n, err
		}
		if !slices.Equal(got, p.tids) {
			missing, extra := 0, 0
			for _, t := range p.tids {
				if _, found := slices.BinarySearch(got, t); !found {
					missing++
				}
			}
			for _, t := range got {
				if _, found := slices.BinarySearch(p.tids, t); !found {
					extra++
				}
			}
			return n, fmt.Errorf("restored process %d has %d tasks, was %d: %d tids missing, %d new", p.pid, len(got), len(p.tids), missing, extra)
		}
		n += len(got)
	}
	return n, nil
}

// askAll signals every process of the victim, each by its pid, and waits
// for each one's reply file.
func (v *scaleVictim) askAll(sig unix.Signal, reply string, timeout time.Duration) error {
	want := names(reply, len(v.procs))
	for _, f := range append(want, names("bad", len(v.procs))...) {
		_ = os.Remove(filepath.Join(v.w.dir, f))
	}
	v.w.drain()
	for _, p := range v.procs {
		if err := unix.Kill(p.pid, sig); err != nil {
			return fmt.Errorf("signal victim process %d: %w", p.pid, err)
		}
	}
	return v.w.wait(want, timeout, func() error {
		for _, p := range v.procs {
			if !alive(p.pid) {
				return fmt.Errorf("restored process %d died", p.pid)
			}
		}
		return nil
	})
}

// reapDumped waits for the original victim that stasis dump killed: the
// root is a child of bench, the others become its children (it is a
// subreaper) when their parents die. Their zombies would keep the pids.
func (v *scaleVictim) reapDumped() error {
	err := v.cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return fmt.Errorf("reap dumped victim %d: %w", v.root, err)
	}
	return v.reapAll()
}

func (v *scaleVictim) killAll() error {
	for _, p := range v.procs {
		_ = unix.Kill(p.pid, unix.SIGKILL)
	}
	return v.reapAll()
}

// reapAll waits until no pid of the victim exists, reaping those that
// are (or become) children of bench.
func (v *scaleVictim) reapAll() error {
	deadline := time.Now().Add(time.Minute)
	for _, p := range v.procs {
		for {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(p.pid, &ws, unix.WNOHANG|unix.WALL, nil)
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.pid)); err != nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("victim process %d still exists", p.pid)
			}
			time.Sleep(time.Millisecond)
		}
		track(p.pid, false)
	}
	return nil
}

func (v *scaleVictim) close() {
	for _, p := range v.procs {
		if tracked(p.pid) {
			_ = unix.Kill(p.pid, unix.SIGKILL)
		}
	}
	if tracked(v.root) {
		_ = unix.Kill(v.root, unix.SIGKILL)
	}
	if v.cmd.ProcessState == nil {
		_ = v.cmd.Wait()
	}
	if v.procs == nil {
		v.procs = []taskInfo{{pid: v.root}}
	}
	_ = v.reapAll()
	track(v.root, false)
	v.w.close()
	os.RemoveAll(v.w.dir)
}

// dirWatch reports the files closed after writing in one directory.
type dirWatch struct {
	dir string
	fd  int
}

func watchDir(dir string) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return &dirWatch{dir: dir, fd: fd}, nil
}

func (w *dirWatch) close() { unix.Close(w.fd) }

// drain drops the events of files created before the question.
func (w *dirWatch) drain() {
	buf := make([]byte, 64<<10)
	for {
		if _, err := linux.Read(w.fd, buf); err != nil {
			return
		}
	}
}

// wait returns when every name in want has been written, or with an
// error when an error-K or bad-K file appears (its content is the
// reason), when check fails (polled every 100 ms) or at the timeout.
func (w *dirWatch) wait(want []string, timeout time.Duration, check func() error) error {
	left := map[string]bool{}
	for _, n := range want {
		left[n] = true
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 64<<10)
	for len(left) > 0 {
		rest := time.Until(deadline)
		if rest <= 0 {
			return fmt.Errorf("victim: %d of %d files %s... missing after %v", len(left), len(want), want[0], timeout)
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(min(rest, 100*time.Millisecond)/time.Millisecond)+1)
		if err != nil && err != unix.EINTR {
			return err
		}
		if n <= 0 {
			if err := check(); err != nil {
				return err
			}
			continue
		}
		k, err := linux.Read(w.fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return err
		}
		for off := 0; off+16 <= k; {
			l := int(binary.LittleEndian.Uint32(buf[off+12:]))
			got := strings.TrimRight(string(buf[off+16:off+16+l]), "\x00")
			off += 16 + l
			if strings.HasPrefix(got, "error-") || strings.HasPrefix(got, "bad-") {
				why, _ := os.ReadFile(filepath.Join(w.dir, got))
				return fmt.Errorf("victim reports (%s): %s", got, strings.TrimSpace(string(why)))
			}
			delete(left, got)
		}
	}
	return nil
}

// Milestones the restore watcher records (see watchScale).
const (
	msMapped  = "address space 99% mapped"
	msFilled1 = "1% of the pages resident (scale)"
	msFilled  = "99% of the pages resident (scale)"
)

// watchScale polls the restored root's /proc/PID/statm from outside every
// 500 µs and records when the pid exists, when its address space reaches
// 99% of the original's size (vsz pages: the mappings are made) and when
// its resident pages pass 1% and 99% of fill (the memory fill).
func watchScale(pid int, vsz, fill int64, rec *recorder, stop <-chan struct{}) {
	path := fmt.Sprintf("/proc/%d/statm", pid)
	exists, mapped, filled1, filled := false, false, false, false
	for {
		select {
		case <-stop:
			return
		default:
		}
		if b, err := os.ReadFile(path); err == nil {
			var size, res int64
			fmt.Sscan(string(b), &size, &res)
			if !exists {
				exists = true
				rec.add(msPidExists)
			}
			if !mapped && vsz > 0 && size >= vsz*99/100 {
				mapped = true
				rec.add(msMapped)
			}
			if !filled1 && fill > 0 && res >= fill/100 {
				filled1 = true
				rec.add(msFilled1)
			}
			if !filled && fill > 0 && res >= fill*99/100 {
				filled = true
				rec.add(msFilled)
			}
			if exists && mapped && filled {
				return
			}
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// Names of the spans a -v4 log record opens: the phase of "dump phase" and
// "restore phase" records, else these.
var dumpNames = map[string]string{
	"tree seized":            "(tree seized)",
	"dump done, tree killed": "return: exit",
}

var restoreNames = map[string]string{
	msPidExists:               "pid exists -> address space 99% mapped (unmap the puppet's, map areas)",
	msMapped:                  "mapped -> 1% of the root's pages resident",
	msFilled1:                 "memory fill of the root: 1% -> 99% resident",
	msFilled:                  "99% resident -> next engine record",
	"inherited mappings kept": "child: unmap what it does not keep, map areas, fill pages (to 'pages restored')",
	"pages restored":          "after 'pages restored': mem.Protect (mprotect, madvise), vDSO, mm, session (+ clone3 of the next child)",
	"restore done":            "return: exit",
}

// logSpans cuts [t0, end] at every record of a -v4 text log.
func logSpans(path string, t0, end time.Time, first string, after map[string]string) ([]span, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	t0, end = t0.Round(0), end.Round(0)
	rec := &recorder{}
	for _, line := range strings.Split(string(b), "\n") {
		kv := parseLogLine(line)
		t, err := time.Parse("2006-01-02T15:04:05.000Z07:00", kv["time"])
		if err != nil {
			continue
		}
		// The text log prints milliseconds, truncated: take the middle.
		t = t.Add(500 * time.Microsecond)
		if t.After(end) {
			t = end
		}
		rec.recs = append(rec.recs, record{t: t, msg: kv["msg"], phase: kv["phase"]})
	}
	return rec.spans(t0, end, first, after), nil
}

// mergeWatch cuts the restore's log spans (which start at t0) again at
// the watcher's milestones.
func mergeWatch(spans []span, w *recorder, t0 time.Time) []span {
	w.mu.Lock()
	ms := append([]record(nil), w.recs...)
	w.mu.Unlock()
	if len(ms) == 0 || len(spans) == 0 {
		return spans
	}
	type cut struct {
		at   time.Duration // from t0
		name string        // of the span it opens
	}
	var total time.Duration
	for _, s := range spans {
		total += s.d
	}
	// Every milestone comes before the first engine record (the root's
	// memory is restored before anything is logged); one seen later was
	// seen late, by a poll or the log's millisecond.
	var cuts []cut
	for _, m := range ms {
		if d := m.t.Round(0).Sub(t0.Round(0)); d >= 0 {
			cuts = append(cuts, cut{min(d, spans[0].d), restoreNames[m.msg]})
		}
	}
	var at time.Duration
	for k, s := range spans {
		if k > 0 {
			cuts = append(cuts, cut{at, s.name})
		}
		at += s.d
	}
	slices.SortStableFunc(cuts, func(a, b cut) int { return cmp.Compare(a.at, b.at) })
	var out []span
	name, prev := spans[0].name, time.Duration(0)
	for _, c := range cuts {
		out = append(out, span{name, c.at - prev})
		name, prev = c.name, c.at
	}
	return append(out, span{name, total - prev})
}

// parseLogLine splits a slog text line into its key=value pairs.
func parseLogLine(line string) map[string]string {
	kv := map[string]string{}
	for line != "" {
		line = strings.TrimLeft(line, " ")
		eq := strings.IndexByte(line, '=')
		if eq <= 0 {
			break
		}
		key := line[:eq]
		line = line[eq+1:]
		var val string
		if strings.HasPrefix(line, `"`) {
			end := 1
			for end < len(line) && line[end] != '"' {
				if line[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(line) {
				end = len(line) - 1
			}
			if v, err := strconv.Unquote(line[:end+1]); err == nil {
				val = v
			} else {
				val = line[1:end]
			}
			line = line[min(end+1, len(line)):]
		} else {
			sp := strings.IndexByte(line, ' ')
			if sp < 0 {
				sp = len(line)
			}
			val, line = line[:sp], line[sp:]
		}
		kv[key] = val
	}
	return kv
}
