package restore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/cgroup"
	"github.com/stasis-cr/stasis/internal/cpuinfo"
	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/interrupt"
	"github.com/stasis-cr/stasis/internal/kerndat"
	"github.com/stasis-cr/stasis/internal/lazy"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/mount"
	"github.com/stasis-cr/stasis/internal/netlock"
	"github.com/stasis-cr/stasis/internal/netns"
	"github.com/stasis-cr/stasis/internal/ns"
	"github.com/stasis-cr/stasis/internal/pstree"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/puppet"
	_ "github.com/stasis-cr/stasis/internal/sockets" // registers the socket kinds with files
	"github.com/stasis-cr/stasis/internal/stats"
	"github.com/stasis-cr/stasis/internal/tty"
)

// Options selects how a checkpoint is restored.
type Options struct {
	ImagesDir string
	WorkDir   string
	PidFile   string
	ShellJob  bool
	// Prepared, if set, is called once the images are read and checked,
	// before the pids are checked free and the first task is made: stasis
	// migrate prepares the restore on the target while the source still
	// holds the tree (and its pids), and goes on when it is gone.
	Prepared func() error
	// PidNS restores the tree into a new pid namespace, where every task
	// gets its original pid whatever this host uses. A small init (stasis
	// itself) is the namespace's pid 1 and the root's parent.
	PidNS bool
	// Sibling (criu's --restore-sibling, the RPC's rst_sibling): the root
	// is a child of stasis' parent, not of stasis, as criu's is of the
	// swrk client. Restored.Wait cannot wait for it then.
	Sibling bool
	// NetworkLock locks the tree's TCP connections while it is restored
	// and unlocks them (with the dump's lock) once it runs.
	NetworkLock netlock.Mode
	Files       files.RestoreOptions
	Cgroups     cgroup.RestoreOptions
	Mounts      mount.RestoreOptions // --root, external mounts
	// Net: --veth-pair, --external veth[]/net[], --join-ns net:,
	// --empty-ns net (internal/netns).
	Net netns.Options
	Log *slog.Logger
	// Unprivileged: stasis lacks CAP_SYS_ADMIN (criu's --unprivileged).
	// The restored tasks are traced without PTRACE_O_SUSPEND_SECCOMP,
	// which needs it, so a tree under seccomp is refused.
	Unprivileged bool
	// CPUCap: --cpu-cap given, this CPU is checked against cpuinfo.img.
	CPUCap cpuinfo.Caps
	// Notify, if set, is called at criu's action-script points of a
	// restore ("pre-restore", "setup-namespaces" and
	// "post-setup-namespaces" when the tree gets namespaces of its own,
	// "post-restore", "pre-resume",
	// "post-resume"), with the root's host pid where criu gives one; an
	// error fails the restore there, but for "post-resume" (the tree runs).
	Notify func(script string, pid int) error
	// LazyPages (--lazy-pages): private anonymous pages come later, from
	// the lazy-pages daemon listening in the work dir (lazy.go).
	LazyPages bool
}

// Restored is a restored tree that runs on its own.
type Restored struct {
	Pid     int // pid of the root task (host view)
	waitPid int // the child of stasis whose exit reports the root's
	sibling bool
}

// Wait waits for the restored root to exit and returns its exit code,
// 128+signal if it was killed, as a shell reports it. The root is a child
// of the restoring process, so only that process can wait for it.
func (r *Restored) Wait() (int, error) {
	var ws unix.WaitStatus
	pid := r.Pid
	if r.sibling {
		return -1, fmt.Errorf("wait for restored pid %d: restored as a sibling, it is its parent's child: %w", r.Pid, unix.ECHILD)
	}
	if r.waitPid != 0 {
		pid = r.waitPid
	}
	for {
		if _, err := linux.Wait4(pid, &ws, 0); err != nil {
			return -1, fmt.Errorf("wait for restored pid %d: %w", r.Pid, err)
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus(), nil
		case ws.Signaled():
			return 128 + int(ws.Signal()), nil
		}
	}
}

type restorer struct {
	ctx         context.Context // canceled by a signal: roll back at the next safe point
	opts        Options
	log         *slog.Logger
	imgs        *imageSet
	ns          *ns.Restorer // the namespaces of the images, the pids of each level
	puppet      *puppet.Puppet
	scratchBase uint64
	procs       []*taskRestorer // every process created, parents first
	init        *ptrace.Task    // pid 1 of the new pid namespace (PidNS)
	// puppet0Scratch is the puppet's scratch mapping, which init inherits.
	puppet0Scratch ptrace.Scratch
	stats          restoreStats
	files          *files.Restorer // files.img entries opened in stasis, shared by all tasks
	mem            *mem.Restorer   // the tasks' address spaces (see memory)
	// cg holds the tasks' cgroups (cgroup.img).
	cg *cgroup.Restorer
	// channelFd is the fd number of the pidfd of stasis in every task,
	// above every fd number of the image (see puppet.OpenChannel).
	channelFd int
	chanSock  *os.File // stasis' end of the fd channel when it is a socket (channel.go)
	// lockNet takes the network lock in the namespace of the tree's root
	// once it made one (netCreated).
	lockNet func(nsPid int) error
	lazy    *lazy.Conn // to the lazy-pages daemon (lazy.go)
}

type restoreStats struct {
	mem.FillStats
	start, forked time.Time
}

func (s *restoreStats) add(f mem.FillStats) {
	s.Compared += f.Compared
	s.SkippedCOW += f.SkippedCOW
	s.Restored += f.Restored
}

// Restore restores the checkpoint in opts.ImagesDir and returns once the
// tree runs. Once ctx is done, the restore stops at its next safe point
// (between phases and tasks, every chunk of a page fill) and kills what it
// created, as a failed restore does, with an error wrapping
// interrupt.ErrInterrupted; once every task runs, it no longer stops.
func Restore(ctx context.Context, opts Options) (*Restored, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	opts.Files.ShellJob = opts.ShellJob
	opts.Files.Log = opts.Log
	r := &restorer{ctx: ctx, opts: opts, log: opts.Log}
	var res *Restored
	err := ptrace.RunLocked(func() error {
		var err error
		res, err = r.run()
		return err
	})
	return res, err
}

func (r *restorer) run() (_ *Restored, err error) {
	r.stats.start = time.Now()
	images.Warm() // the image decoders, beside the first reads
	if err := r.notify("pre-restore"); err != nil {
		return nil, err
	}
	if err := r.prepare(); err != nil {
		return nil, err
	}
	r.log.Debug("restore phase", "phase", "images read and checked", "processes", len(r.imgs.all), "took", time.Since(r.stats.start))
	var runID string
	if r.imgs.inv.NetworkLockMethod != nil && r.imgs.inv.GetNetworkLockMethod() == netlock.InventoryMethod(netlock.Nftables) {
		runID = r.imgs.inv.GetDumpCriuRunId()
	}
	var lock *netlock.Lock
	r.lockNet = func(nsPid int) (err error) {
		lock, err = netlock.ForRestore(r.opts.NetworkLock, r.imgs.root.Pid(), runID, maps.Values(r.imgs.files), nsPid, r.log)
		return err
	}
	// A tree with a network namespace of its own is locked in it, once
	// its root made it (createTree).
	if !r.ns.HasNet() {
		if err := r.lockNet(0); err != nil {
			return nil, err
		}
		r.lockNet = nil
	}
	// Last: after the rollback, or once the tasks run with their sockets
	// out of repair mode (criu's network_unlock).
	defer func() {
		if uerr := lock.Unlock(); uerr != nil {
			r.log.Error("network unlock", "err", uerr)
		}
	}()
	defer func() {
		if err != nil {
			r.rollback()
		} else {
			r.files.Succeeded()
		}
		r.closeLazy()
		if r.chanSock != nil {
			r.chanSock.Close()
		}
		r.ns.CloseNet()
		if cerr := errors.Join(r.files.Close(), r.imgs.shmem.Close()); cerr != nil {
			r.log.Warn("closing restored files", "err", cerr)
		}
	}()
	// After the lock is taken: an interrupted restore removes it, as a
	// failed one does.
	if err := r.stop("images", 0); err != nil {
		return nil, err
	}
	if err := r.stop("create tree", 0); err != nil {
		return nil, err
	}
	// Made before the first task, which goes straight into them.
	if err := r.cg.Prepare(); err != nil {
		return nil, err
	}
	r.log.Debug("restore phase", "phase", "create tree (processes, memory)")
	if err := r.createTree(); err != nil {
		return nil, err
	}
	if r.opts.PidNS || len(r.ns.NewKinds()) > 0 {
		if err := r.notify("setup-namespaces", "post-setup-namespaces"); err != nil {
			return nil, err
		}
	}
	r.stats.forked = time.Now()
	// Then each phase for every process, parents first.
	phases := []struct {
		name string
		fn   func(*taskRestorer) error
		once func() error // instead of fn: once for the whole tree
	}{
		{name: "process groups", fn: (*taskRestorer).joinGroup},
		{name: "controlling terminals", once: func() error { return tty.RestoreCttys(r.files, r.ttyProcesses()) }},
		{name: "threads", fn: (*taskRestorer).createThreads},
		{name: "files", fn: (*taskRestorer).restoreFiles},
		// Every mapping and fd is in place: memfds can be sealed.
		{name: "finish files", once: r.files.Finish},
		{name: "exits", fn: (*taskRestorer).exitIfDead},
		// Before the task state: the kernel writes the rseq area of a
		// thread as soon as it is registered, which must then be a fault
		// the daemon serves, not a page made here (criu's order too).
		{name: "lazy pages", once: r.lazyPages},
		{name: "task state", fn: (*taskRestorer).restoreState},
		{name: "credentials", fn: (*taskRestorer).restoreCreds},
		{name: "notify", once: func() error { return r.notify("post-restore", "pre-resume") }},
		{name: "resume", fn: (*taskRestorer).resume},
		{name: "lazy pages finished", once: r.finishLazy},
	}
	for _, ph := range phases {
		if ph.once != nil {
			if err := r.stop(ph.name, 0); err != nil {
				return nil, err
			}
			r.log.Debug("restore phase", "phase", ph.name)
			if err := ph.once(); err != nil {
				return nil, fmt.Errorf("restore: %s: %w", ph.name, err)
			}
			continue
		}
		for _, tr := range r.procs {
			if err := r.stop(ph.name, tr.t.Tid); err != nil {
				return nil, err
			}
			r.log.Debug("restore phase", "phase", ph.name, "pid", tr.t.Tid)
			if err := ph.fn(tr); err != nil {
				return nil, fmt.Errorf("restore pid %d: %s: %w", tr.t.Tid, ph.name, err)
			}
		}
	}
	return r.finish()
}

// prepare reads and checks every image and everything the restore needs
// before it changes anything: namespaces, what --unprivileged cannot do,
// the helper tasks, the files' restorer, free pids.
func (r *restorer) prepare() error {
	var err error
	if r.imgs, err = readImages(r.opts.ImagesDir); err != nil {
		return err
	}
	if err := cpuinfo.CheckDir(r.imgs.dir, r.opts.CPUCap); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := r.loadNamespaces(); err != nil {
		return err
	}
	if err := r.loadCgroups(); err != nil {
		return err
	}
	if r.opts.Unprivileged {
		if r.opts.PidNS {
			return fmt.Errorf("restore --pidns: creating a pid namespace (clone3 CLONE_NEWPID) needs CAP_SYS_ADMIN, which --unprivileged has not; restore without --pidns: %w", kerndat.ErrPrivilege)
		}
		if err := r.imgs.checkUnprivileged(); err != nil {
			return err
		}
	}
	if err := r.imgs.addHelpers(r.opts.ShellJob); err != nil {
		return err
	}
	if err := r.checkLazy(); err != nil {
		return err
	}
	if r.imgs.inv.GetTcpClose() {
		r.opts.Files.TCPClose = true // dumped with --tcp-close: no state to restore
	}
	r.files = files.NewRestorer(r.opts.Files, r.imgs.dir, r.imgs.files, r.imgs.memfds)
	r.files.HostPids = map[int]int{}
	r.files.NsPath = r.nsPath
	if r.opts.Prepared != nil {
		if err := r.opts.Prepared(); err != nil {
			return err
		}
	}
	if !r.opts.PidNS && !r.ns.NewPidNS() {
		for _, pid := range r.imgs.allPids() {
			if err := pstree.CheckPidFree(pid); err != nil {
				return err
			}
		}
	}
	return nil
}

// finish runs once every task runs: the terminal's redraw, the post-resume
// notification, the init of a new pid namespace, stats-restore and the
// pidfile.
func (r *restorer) finish() (*Restored, error) {
	tty.RedrawForeground(r.files)
	if err := r.cg.Finish(); err != nil {
		r.log.Warn("the restored tree runs, but its cgroups were not frozen again", "err", err)
	}
	res := &Restored{Pid: r.procs[0].t.Tid, sibling: r.opts.Sibling}
	// The tree runs: as in criu, a failed post-resume is only logged.
	if err := r.notify("post-resume"); err != nil {
		r.log.Warn("the restored tree runs anyway", "err", err)
	}
	if r.init != nil {
		s := &ptrace.Scratch{Pid: r.init.Tid, Addr: r.puppet0Scratch.Addr, Size: r.puppet0Scratch.Size}
		if err := puppet.StartInit(r.init, s, r.channelFd, r.imgs.root.Pid()); err != nil {
			return nil, err
		}
		res.waitPid = r.init.Tid
	}
	r.procs = nil
	r.init = nil
	work := r.opts.WorkDir
	if work == "" {
		work = r.opts.ImagesDir
	}
	st := stats.Restore{Start: r.stats.start, Forked: r.stats.forked, Compared: r.stats.Compared, SkippedCOW: r.stats.SkippedCOW, Restored: r.stats.Restored}
	if err := stats.WriteRestore(work, st); err != nil {
		r.log.Warn("stats-restore not written", "err", err)
	}
	if r.opts.PidFile != "" {
		if err := os.WriteFile(r.opts.PidFile, []byte(strconv.Itoa(res.Pid)+"\n"), 0o644); err != nil {
			return res, fmt.Errorf("write pidfile: %w", err)
		}
	}
	r.log.Info("restore done", "pid", res.Pid, "image pid", r.imgs.root.Pid())
	return res, nil
}

// notify runs the caller's hook at criu's action-script points, in order.
func (r *restorer) notify(scripts ...string) error {
	if r.opts.Notify == nil {
		return nil
	}
	for _, s := range scripts {
		pid := 0
		if (s == "setup-namespaces" || s == "post-restore") && len(r.procs) > 0 {
			pid = r.procs[0].t.Tid
		}
		if err := r.opts.Notify(s, pid); err != nil {
			return fmt.Errorf("restore: %s notification: %w", s, err)
		}
	}
	return nil
}

// stop is a safe point of the restore: the test hook's point
// "restore-PHASE", then an error if the restore was interrupted.
func (r *restorer) stop(phase string, pid int) error {
	return interrupt.Point(r.ctx, "restore", phase, pid)
}

// createTree creates every process with its pid, parents before children,
// each from its real parent so that parent, session and group relations
// are the kernel's own. A process gets its memory before its children are
// cloned from it, so that they inherit it copy-on-write as they did.
func (r *restorer) createTree() error {
	// The root becomes a child of stasis when the puppet it was cloned
	// from is gone, so that restore can wait for it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	var err error
	start := puppet.Start
	if r.opts.Sibling {
		start = puppet.StartSibling
	}
	if r.puppet, err = start(r.opts.Unprivileged); err != nil {
		return err
	}
	if r.scratchBase, err = scratchHole(r.imgs, r.puppet.Tr.Tid); err != nil {
		return err
	}
	r.channelFd = r.imgs.maxFd() + 1
	if err := r.puppet.OpenChannel(r.channelFd); err != nil {
		return err
	}
	if err := r.ns.BeforeRoot(r.puppet.Tr, r.puppet.Tr.Tid); err != nil {
		return err
	}
	if err := r.ns.JoinNet(r.puppet.Tr, r.channelFd); err != nil {
		return err
	}
	if err := r.ns.JoinPid(r.puppet.Tr, r.channelFd); err != nil {
		return err
	}
	// Last: the steps above take files through the pidfd.
	if r.ns.NewUserNS() {
		if err := r.openSocketChannel(); err != nil {
			return err
		}
	}
	root := r.imgs.root
	from := r.puppet.Tr
	if r.opts.PidNS {
		if r.init, err = pstree.CloneWithPid(r.puppet.Tr, r.puppet.Scratch, 1, unix.CLONE_NEWPID); err != nil {
			return fmt.Errorf("create a pid namespace: %w", err)
		}
		from = r.init
	}
	scratch := &ptrace.Scratch{Pid: from.Tid, Addr: r.puppet.Scratch.Addr, Size: r.puppet.Scratch.Size}
	t, err := r.cloneProcess(from, scratch, root)
	if err != nil {
		if errors.Is(err, pstree.ErrPidInUse) && !r.ns.NewPidNS() {
			return pstree.PidInUse(root.Pid()) // names the host's task
		}
		return err
	}
	tr := r.newTaskRestorer(t, root)
	if err := r.netCreated(t.Tid); err != nil {
		return err
	}
	if err := r.ns.Created(root.Pid(), t.Tid); err != nil {
		return err
	}
	via := r.puppet.Tr.SyscallIP
	r.puppet0Scratch = *r.puppet.Scratch
	r.puppet.Kill()
	r.puppet = nil
	if err := tr.mapScratch(via); err != nil {
		return err
	}
	if err := r.ns.Mount(tr); err != nil {
		return err
	}
	r.files.Root = r.ns.MountRoot(t.Tid)
	r.files.RootOf = r.ns.MountRootOf
	return tr.create()
}

// rollback kills everything the restore created and waits until none of
// it exists any more: stasis reaps each task as its tracer, and as the
// subreaper that the orphaned zombies of the tree end up with.
func (r *restorer) rollback() {
	if r.files != nil {
		if err := r.files.Rollback(); err != nil {
			r.log.Warn("rollback of the restored files", "err", err)
		}
	}
	var tids []int
	if r.init != nil {
		// Killing a namespace's init kills every task in it.
		_ = unix.Kill(r.init.Tid, unix.SIGKILL)
		tids = append(tids, r.init.Tid)
		r.init = nil
	}
	for _, tr := range r.procs {
		_ = unix.Kill(tr.t.Tid, unix.SIGKILL)
		tids = append(tids, tr.t.Tid)
		for _, t := range tr.threads {
			tids = append(tids, t.Tid)
		}
	}
	pstree.Reap(tids)
	r.procs = nil
	if r.puppet != nil {
		r.puppet.Kill()
		r.puppet = nil
	}
	// Once no task is left in them.
	if r.cg != nil {
		if err := r.cg.Rollback(); err != nil {
			r.log.Warn("rollback of the restored cgroups", "err", err)
		}
	}
}
