package dump

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/cgroup"
	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/core"
	"github.com/stasis-cr/stasis/internal/cpuinfo"
	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/interrupt"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/mount"
	"github.com/stasis-cr/stasis/internal/netlock"
	"github.com/stasis-cr/stasis/internal/netns"
	"github.com/stasis-cr/stasis/internal/ns"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/progress"
	"github.com/stasis-cr/stasis/internal/pstree"
	"github.com/stasis-cr/stasis/internal/ptrace"
	_ "github.com/stasis-cr/stasis/internal/sockets" // registers the socket kinds with files
	"github.com/stasis-cr/stasis/internal/stats"
	_ "github.com/stasis-cr/stasis/internal/tty" // registers the terminal kind with files
)

// Options selects what is dumped and what happens to the tree after.
type Options struct {
	Pid          int
	ImagesDir    string
	WorkDir      string
	LeaveRunning bool
	LeaveStopped bool
	ShellJob     bool
	// NetworkLock drops the packets of the tree's TCP connections from
	// the moment each is dumped until the restore (see netlock).
	NetworkLock netlock.Mode
	Files       files.DumpOptions
	Cgroups     cgroup.DumpOptions
	Mounts      mount.DumpOptions // external mounts, --enable-fs, sharing
	// Net: --empty-ns net; --external net[INO]:KEY comes in Files.External.
	Net netns.Options
	Log *slog.Logger
	// Notify, if set, is called at criu's action-script points of a dump
	// ("pre-dump", "post-dump"); an error fails the dump there.
	Notify func(script string, pid int) error
	// Mem: pre-dump, --track-mem, --prev-images-dir, --page-server.
	Mem MemOptions
	// CPUCap: --cpu-cap given, cpuinfo.img is written (internal/cpuinfo).
	CPUCap cpuinfo.Caps
	// LazyPages (--lazy-pages): private anonymous pages are not saved but
	// served on this listener once the images are complete (lazy.go).
	LazyPages net.Listener
}

// Sentinel errors of refused dumps.
var (
	ErrNoProcess      = errors.New("no such process")
	ErrKernelThread   = errors.New("is a kernel thread")
	ErrSelf           = errors.New("is stasis itself")
	ErrNotSupported   = fmt.Errorf("%w yet", linux.ErrNotSupported) // matches stasis.ErrNotSupported
	ErrSessionOutside = errors.New("session outside the dumped tree")
)

// pfKthread is PF_KTHREAD in /proc/PID/stat flags (include/linux/sched.h).
const pfKthread = 0x00200000

// Task ids of a lone task: criu numbers each kind of kernel object from 1
// and gives its own objects (inventory root_ids) the first ids.
const (
	rootObjID = 1
)

type dumper struct {
	ctx     context.Context // canceled by a signal: roll back at the next safe point
	opts    Options
	runID   string // inventory's dump_criu_run_id; names the network lock
	log     *slog.Logger
	dir     *images.Dir
	files   *files.Table
	root    *process
	all     []*process // every process seized, parents first
	ids     idAlloc
	kobjs   []linux.KcmpSet[int] // processes by object, see dumpIDs
	ns      *ns.Dumper           // namespaces, and the images' pids
	seccomp core.SeccompTable
	lock    *netlock.Lock
	sums    map[string]*checksum.Sum // computed while writing
	workDir *images.Dir              // where stats-dump went, if not dir
	stats   stats.Dump

	it        *iteration // an iterative dump's state (iterate.go), or nil
	preflight bool       // only check: see Preflight
	report    Report     // what a preflight found

	cg *cgroup.Dumper // the tasks' cgroups (cgroup.img)
	// freezer is --freeze-cgroup's, once frozen.
	freezer *cgroup.Freezer
	// preseized are the threads seized through --freeze-cgroup, not yet
	// found in the tree.
	preseized map[int]bool
	lazy      *lazyTree // a lazy dump's pages to serve (lazy.go)
}

// Dump checkpoints the tree rooted at opts.Pid into opts.ImagesDir. Once
// ctx is done, the dump stops at its next safe point (between phases and
// tasks, every chunk of a page copy) and rolls back as a failed dump does,
// with an error wrapping interrupt.ErrInterrupted; after the images are
// complete and the tree is being killed, it no longer stops.
func Dump(ctx context.Context, opts Options) error {
	return ptrace.RunLocked(newDumper(ctx, opts, false).run)
}

// Report is what a preflight found: the size of the tree and every
// reason its dump would fail, one per resource, in the words of the dump.
type Report struct {
	Processes, Threads int
	Refused            []error
}

// Preflight checks whether the tree rooted at opts.Pid can be dumped with
// these options, without dumping it: it seizes the tree as a dump does,
// runs every phase that looks at it (all but pages and images), lists
// every refusal instead of stopping at the first, and resumes the tree
// as a failed dump does. It writes nothing and changes nothing outside
// stasis: no images dir, no network lock, no repair mode, no link. The
// error is for a tree that could not be checked at all (no such pid).
// Once ctx is done it stops, as a dump does.
func Preflight(ctx context.Context, opts Options) (*Report, error) {
	opts.ImagesDir, opts.NetworkLock = "", netlock.Skip
	opts.LeaveRunning, opts.LeaveStopped = true, false
	opts.Files.Preflight = true
	d := newDumper(ctx, opts, true)
	if err := ptrace.RunLocked(d.run); err != nil {
		return nil, err
	}
	d.report.Refused = d.files.Refused
	return &d.report, nil
}

func newDumper(ctx context.Context, opts Options, preflight bool) *dumper {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	d := &dumper{ctx: ctx, opts: opts, preflight: preflight, log: opts.Log, sums: map[string]*checksum.Sum{},
		// inventory's root_ids, stasis' own objects, take the first ids.
		ids: idAlloc{"vm": rootObjID, "files": rootObjID, "fs": rootObjID, "sighand": rootObjID}, ns: ns.NewDumper()}
	d.ns.MountOpts = opts.Mounts
	d.ns.Net, d.ns.Log = opts.Net, opts.Log
	d.ns.MemOnly = opts.Mem.PreDump
	d.ns.Net.External = append(d.ns.Net.External, opts.Files.External...)
	d.runID = netlock.RunID(opts.Pid)
	if d.lock = netlock.New(opts.NetworkLock, opts.Pid, opts.Log); d.lock != nil {
		d.lock.SetRunID(d.runID)
		opts.Files.OnConnection = func(c files.Conn) error { return d.lock.Add(netlock.Conn(c)) }
	}
	opts.Files.ShellJob = opts.ShellJob
	d.files = files.NewTable(opts.Files, func() int { return d.ids.next("pages") })
	d.files.NsID = d.ns.FileID
	return d
}

func (d *dumper) run() (err error) {
	d.stats.Start = time.Now()
	images.Warm() // the image encoders, while the tree is seized
	// First deferred, so last run: once the tree is resumed or killed.
	defer func() {
		if lerr := d.lock.Release(); lerr != nil {
			d.log.Warn("network unlock", "err", lerr)
		}
	}()
	defer d.restoreFreezer()
	if err := d.opts.Files.Check(); err != nil {
		return err
	}
	if err := d.prepareIteration(); err != nil {
		return err
	}
	if d.cg, err = cgroup.NewDumper(d.opts.Cgroups); err != nil {
		return err
	}
	defer d.cg.Close()
	if err := d.notify("pre-dump"); err != nil {
		return err
	}
	if err := d.checkTarget(); err != nil {
		return err
	}
	if err := d.stop("start", 0); err != nil {
		return err
	}
	if !d.preflight {
		if d.dir, err = images.Create(d.opts.ImagesDir); err != nil {
			return err
		}
	}
	defer func() {
		d.holdTrackers(err == nil && (d.opts.LeaveRunning || d.opts.LeaveStopped))
		if err != nil {
			d.log.Error("dump failed, resuming the tree", "err", err)
			d.files.RemoveLinkRemaps()
			if rerr := d.resume(); rerr != nil {
				err = fmt.Errorf("%w (and resuming the tree failed: %v)", err, rerr)
			} else {
				err = fmt.Errorf("%w (the tree was resumed as it was)", err)
			}
			// After the tree runs again: the images can wait, the tree
			// should not.
			if left := d.removeImages(); left != "" {
				err = fmt.Errorf("%w; %s", err, left)
			}
		}
	}()
	if !d.preflight {
		if err := d.linkParent(); err != nil {
			return err
		}
	}
	if err := d.freezeCgroup(); err != nil {
		return err
	}
	d.root, err = d.seizeTree(d.opts.Pid, nil)
	d.releaseFrozen()
	if err != nil {
		return err
	}
	d.stats.Frozen = time.Now()
	d.recordTree()
	d.takeTrackers()
	if err := d.stop("seize", 0); err != nil {
		return err
	}
	if err := d.runPhases(); err != nil {
		return err
	}
	if d.preflight {
		d.log.Info("preflight done, resuming the tree", "refused", len(d.files.Refused), "stopped", time.Since(d.stats.Frozen))
		return d.resume()
	}
	if err := d.stop("images", 0); err != nil {
		return err
	}
	d.log.Debug("dump phase", "phase", "images")
	if err := d.writeImages(); err != nil {
		return err
	}
	if err := d.notify("post-dump"); err != nil {
		return err
	}
	if err := d.serveLazy(); err != nil {
		return err
	}
	// The last point of return: from here the tree is killed (or let go)
	// and a signal no longer stops the dump, whose images are complete.
	if err := d.stop("finish", 0); err != nil {
		return err
	}
	d.log.Debug("dump phase", "phase", "finish")
	return d.finish()
}

// recordTree tells the files table which pids are the tree's, and the
// preflight report its size, once the tree is seized.
func (d *dumper) recordTree() {
	d.files.Tasks = map[int]bool{}
	for _, p := range d.all {
		d.files.Tasks[p.pid] = true
		for _, th := range p.threads {
			d.files.Tasks[th.tid] = true
		}
	}
	d.log.Info("tree seized", "processes", len(d.all), "pid", d.opts.Pid)
	for _, p := range d.all {
		d.report.Processes++
		d.report.Threads += len(p.threads)
	}
}

// runPhases runs the dump's phases in order: each for every process
// (zombies and processes a preflight already refused skipped) or once for
// the tree; a preflight runs only those that check.
func (d *dumper) runPhases() error {
	phases := []struct {
		name   string
		fn     func(*process) error // per process,
		tree   func() error         // or once for the whole tree
		checks bool                 // run by a preflight too: it may refuse something
	}{
		{name: "check", fn: d.check, checks: true},
		{name: "ids", fn: d.dumpIDs, checks: true},
		{name: "task state", tree: d.askTree, checks: true},
		{name: "task state", fn: d.dumpCore, checks: true},
		{name: "cgroups", fn: d.dumpCgroups, checks: true},
		{name: "files", fn: d.dumpFiles, checks: true},
		{name: "memory layout", fn: d.dumpMM, checks: true},
		// What only the whole tree tells (a pipe or a peer outside it),
		// before a page is copied.
		{name: "check tree", tree: d.files.CheckTree, checks: true},
		{name: "pages", tree: d.dumpAllPages},
	}
	for _, ph := range phases {
		if d.preflight && !ph.checks {
			continue
		}
		if ph.tree != nil {
			d.log.Debug("dump phase", "phase", ph.name)
			if err := ph.tree(); err != nil {
				return err
			}
			continue
		}
		for _, p := range d.all {
			if p.zombie || p.refused {
				continue
			}
			if err := d.stop(ph.name, p.pid); err != nil {
				return err
			}
			d.log.Debug("dump phase", "phase", ph.name, "pid", p.pid)
			if err := ph.fn(p); err != nil {
				// A preflight lists it and goes on with the other processes.
				if err := d.files.Refuse(err); err != nil {
					return err
				}
				p.refused = true
			}
		}
	}
	return nil
}

// stop is a safe point of the dump: the test hook's point "dump-PHASE",
// then an error if the dump was interrupted.
func (d *dumper) stop(phase string, pid int) error {
	return interrupt.Point(d.ctx, "dump", phase, pid)
}

// notify runs the caller's hook at criu's action-script point script.
func (d *dumper) notify(script string) error {
	if d.opts.Notify == nil {
		return nil
	}
	if err := d.opts.Notify(script, 0); err != nil {
		return fmt.Errorf("dump: %s notification: %w", script, err)
	}
	return nil
}

// removeImages removes what this dump wrote into the images and work
// dirs, and the images dir if the dump created it and it is empty now, so
// that no later restore takes a partial dump for a complete one. It says
// what is left, "" if nothing needs saying.
func (d *dumper) removeImages() string {
	var errs []error
	n := 0
	for _, dir := range []*images.Dir{d.dir, d.workDir} {
		if dir == nil {
			continue
		}
		k, err := dir.RemoveWritten()
		n += k
		if err != nil {
			errs = append(errs, err)
		}
	}
	gone := false
	if d.dir.Created {
		gone = os.Remove(d.dir.Path) == nil
	}
	switch {
	case len(errs) > 0:
		return fmt.Sprintf("partial images could not all be removed from %s: %v", d.dir.Path, errors.Join(errs...))
	case gone:
		return fmt.Sprintf("partial images removed (%d files), and %s, which the dump had created", n, d.dir.Path)
	case n > 0:
		return fmt.Sprintf("partial images removed from %s (%d files)", d.dir.Path, n)
	}
	return ""
}

// checkTarget refuses pids that cannot or must not be dumped before any
// of them is touched.
func (d *dumper) checkTarget() error {
	pid := d.opts.Pid
	if pid <= 0 {
		return fmt.Errorf("dump: invalid pid %d", pid)
	}
	if pid == os.Getpid() {
		return fmt.Errorf("dump pid %d: %w", pid, ErrSelf)
	}
	st, err := proc.ReadStat(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("dump pid %d: %w", pid, ErrNoProcess)
		}
		return fmt.Errorf("dump pid %d: %w", pid, err)
	}
	if st.Flags&pfKthread != 0 {
		return fmt.Errorf("dump pid %d (%s): %w", pid, st.Comm, ErrKernelThread)
	}
	if st.State == 'Z' {
		return fmt.Errorf("dump pid %d (%s): is a zombie", pid, st.Comm)
	}
	return nil
}

// check reads each process's /proc state and refuses what this version
// cannot restore, naming it, before anything else happens to the tree.
func (d *dumper) check(p *process) error {
	var err error
	if p.stat, err = proc.ReadStat(p.pid); err != nil {
		return err
	}
	if p.status, err = proc.ReadStatus(p.pid); err != nil {
		return err
	}
	if p == d.root && p.stat.Session != p.pid && !d.opts.ShellJob && !d.inTree(p.stat.Session) {
		if err := d.files.Refuse(fmt.Errorf("pid %d (%s) belongs to session %d, whose leader is not dumped: %w (use -j/--shell-job to restore it into the session of `stasis restore`)",
			p.pid, p.stat.Comm, p.stat.Session, ErrSessionOutside)); err != nil {
			return err
		}
	}
	if err := d.files.Refuse(d.ns.Check(p.pid, p == d.root)); err != nil {
		return err
	}
	if m := d.ns.Mounts(); m != nil && p == d.root {
		d.files.Mounts = m
	}
	if p == d.root {
		// The tree's connections are locked in its network namespace.
		if err := d.lock.SetNetNS(d.ns.NetPid()); err != nil {
			return err
		}
	}
	if p.smaps, err = proc.ReadSmaps(p.pid); err != nil {
		return err
	}
	if p.areas, err = mem.Classify(p.pid, p.smaps, d.files.Refuse); err != nil {
		return err
	}
	// Injections go through a syscall instruction of the process's vDSO,
	// or of any executable mapping if it unmapped its vDSO.
	ip, err := mem.SyscallInsn(p.pid, p.areas)
	if err != nil {
		return err
	}
	if ip == 0 {
		return fmt.Errorf("pid %d has no syscall instruction in its [vdso] or executable mappings to inject system calls through: %w", p.pid, ErrNotSupported)
	}
	for _, th := range p.threads {
		th.tr.SyscallIP = ip
	}
	return nil
}

func (d *dumper) inTree(pid int) bool {
	for _, p := range d.all {
		if p.pid == pid {
			return true
		}
	}
	return false
}

// dumpCore collects the task state of p and its threads, the only phase
// whose injected calls take pointer arguments: they go through a scratch
// mapping that lives in the process only while they are asked (askTree,
// or ask here), so that a stasis killed at any later moment (files,
// pages, images) leaves no trace of it.
func (d *dumper) dumpCore(p *process) (err error) {
	l := p.leader()
	if p.tps == nil {
		p.tps = readThreadProcs(p)
	}
	tps := p.tps
	if p.asked == nil {
		if err := d.ask([]*process{p}); err != nil {
			return err
		}
	}
	a := p.asked
	if p.tc, err = core.DumpProcess(l.tr, nil, p.stat, p.status, l.stopSig, l.blocked, &a.proc); err != nil {
		return err
	}
	if p.tc.Timers != nil {
		p.tc.Timers.Posix = a.posix
		for _, pt := range p.tc.Timers.Posix {
			if pt.NotifyThreadId != nil { // a host tid: the images' is the root's pid namespace's
				pt.NotifyThreadId = proto.Int32(int32(d.ns.ThreadPid(p.pid, int(pt.GetNotifyThreadId()))))
			}
		}
	}
	tids := make([]int, len(p.threads))
	modes := make([]int, len(p.threads))
	for i, th := range p.threads {
		<-tps[i].done
		if err := tps[i].err; err != nil {
			return err
		}
		if th.core, err = core.DumpThread(th.tr, nil, tps[i].tp, th.blocked, &a.threads[i]); err != nil {
			return err
		}
		tids[i], modes[i] = th.tid, tps[i].tp.Status.Seccomp
	}
	smodes, filters, err := d.seccomp.DumpProcess(tids, modes)
	if err != nil {
		return fmt.Errorf("seccomp of pid %d: %w", p.pid, err)
	}
	for i, th := range p.threads {
		th.core.ThreadCore.SeccompMode = smodes[i].Enum()
		if smodes[i] == criucore.SeccompMode_filter {
			th.core.ThreadCore.SeccompFilter = proto.Uint32(filters[i])
		}
	}
	return nil
}

func (d *dumper) dumpFiles(p *process) error {
	var err error
	if p.sharesFiles {
		// its parent's table, dumped with the parent
	} else if p.fds, err = d.files.DumpFds(p.pid); err != nil {
		return err
	}
	p.cwdID, p.rootID, err = d.files.DumpFS(p.pid)
	return err
}

// dumpMM records the mm entry of p: its VMAs with the files they map,
// mm fields, auxv, AIO rings (mem).
func (d *dumper) dumpMM(p *process) (err error) {
	var calls *mem.MMCalls
	if p.asked != nil {
		calls = &p.asked.mm
	}
	p.mm, err = mem.DumpMM(p.leader().tr, p.pid, p.stat, p.areas, d.files, calls)
	return err
}

// dumpPages saves the pages of p into its pages and pagemap images (mem).
func (d *dumper) dumpPages(p *process) error {
	if d.opts.LazyPages != nil {
		return d.dumpLazyPages(p)
	}
	if d.it != nil {
		return d.dumpIterPages(p)
	}
	if d.stats.MemStart.IsZero() {
		d.stats.MemStart = time.Now()
	}
	p.pagesID = d.ids.next("pages")
	st, sum, err := mem.WritePages(d.dir, p.pid, d.ns.ImagePid(p.pid), p.pagesID, p.areas, func() error {
		interrupt.At(d.ctx, "dump-page-copy")
		return interrupt.Check(d.ctx, fmt.Sprintf("dump phase pages (pid %d)", p.pid))
	}, progress.From(d.ctx))
	if sum != nil {
		d.sums[pagesName(p.pagesID)] = sum
	}
	if err != nil {
		return err
	}
	d.stats.MemEnd = time.Now()
	d.stats.PagesScanned += st.PagesScanned
	d.stats.PagesWritten += st.PagesWritten
	return nil
}

// dumpShmem dumps the content of every shared anonymous memory object of
// the tree once (mem).
func (d *dumper) dumpShmem() error {
	tasks := make([]mem.TaskAreas, 0, len(d.all))
	for _, p := range d.all {
		tasks = append(tasks, mem.TaskAreas{Pid: p.pid, Areas: p.areas})
	}
	return mem.DumpSharedAnon(d.dir, tasks, func() int { return d.ids.next("pages") })
}

func pagesName(id int) string { return "pages-" + strconv.Itoa(id) + ".img" }

// finish lets the tree go the way the options ask: killed (the default),
// left running (-R) or left stopped (-s).
func (d *dumper) finish() error {
	// A tree that does not go on keeps its connections locked until the
	// restore: the lock outlives stasis from here.
	if !d.opts.LeaveRunning {
		if err := d.lock.Persist(); err != nil {
			return err
		}
	}
	if d.opts.LeaveRunning || d.opts.LeaveStopped {
		return d.resume()
	}
	// Connections read out of repair mode go back into it, so that they
	// die with the tree without a word to their peers.
	if err := d.files.BeforeKill(); err != nil {
		return fmt.Errorf("before killing the dumped tree: %w", err)
	}
	pids := make([]int, len(d.all))
	tids := make([][]int, len(d.all))
	for k, p := range d.all {
		pids[k] = p.pid
		for _, th := range p.threads {
			tids[k] = append(tids[k], th.tid)
		}
	}
	if err := pstree.KillSeized(pids, tids); err != nil {
		return err
	}
	if err := d.files.Finish(true); err != nil {
		d.log.Warn("releasing the dumped sockets", "err", err)
	}
	d.log.Info("dump done, tree killed", "pid", d.opts.Pid, "processes", len(d.all))
	return nil
}

// resume puts every seized thread back as it was and detaches, on success
// with -R/-s and on every failure path.
func (d *dumper) resume() error {
	// Connections held in repair mode go on before their tasks do.
	errs := []error{d.files.Finish(false)}
	for _, p := range d.all {
		if p.scratch != nil {
			if err := p.scratch.Unmap(p.leader().tr); err != nil {
				errs = append(errs, err)
			}
			p.scratch = nil
		}
		for _, th := range p.threads {
			if err := d.resumeThread(th); err != nil {
				errs = append(errs, err)
			}
		}
	}
	d.all = nil
	return errors.Join(errs...)
}

func (d *dumper) resumeThread(th *thread) error {
	var errs []error
	if err := th.tr.Restore(); err != nil {
		errs = append(errs, err)
	}
	if err := ptrace.SetSigmask(th.tid, th.blocked); err != nil {
		errs = append(errs, err)
	}
	sig := 0
	switch {
	case d.opts.LeaveStopped:
		sig = int(unix.SIGSTOP)
	case th.stopSig != 0:
		sig = int(th.stopSig)
	}
	if err := ptrace.Detach(th.tid, sig); err != nil {
		errs = append(errs, err)
	}
	// Signals that arrived while the thread was held were dequeued by the
	// stops; send them again.
	for _, s := range th.tr.Signals {
		if s != unix.SIGTRAP {
			_ = unix.Tgkill(th.tr.Tgid(), th.tid, s)
		}
	}
	return errors.Join(errs...)
}
