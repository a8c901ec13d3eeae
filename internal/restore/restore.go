package restore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// Options selects how a checkpoint is restored.
type Options struct {
	ImagesDir string
	WorkDir   string
	PidFile   string
	ShellJob  bool
	Log       *slog.Logger
}

// Restored is a restored tree that runs on its own.
type Restored struct {
	Pid int // pid of the root task (host view)
}

// Wait waits for the restored root to exit and returns its exit code,
// 128+signal if it was killed, as a shell reports it. The root is a child
// of the restoring process, so only that process can wait for it.
func (r *Restored) Wait() (int, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(r.Pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
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
	opts        Options
	log         *slog.Logger
	imgs        *imageSet
	puppet      *puppet
	scratchBase uint64
	procs       []*taskRestorer // every process created, parents first
	stats       restoreStats
	// channelFd is the fd number of the pidfd of stasis in every task,
	// above every fd number of the image (see puppet.openChannel).
	channelFd int
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
// tree runs.
func Restore(opts Options) (*Restored, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	r := &restorer{opts: opts, log: opts.Log}
	var res *Restored
	err := ptrace.RunLocked(func() error {
		var err error
		res, err = r.run()
		return err
	})
	return res, err
}

func (r *restorer) run() (_ *Restored, err error) {
	if r.imgs, err = readImages(r.opts.ImagesDir); err != nil {
		return nil, err
	}
	if err := r.imgs.addHelpers(r.opts.ShellJob); err != nil {
		return nil, err
	}
	for _, pid := range r.imgs.allPids() {
		if err := checkPidFree(pid); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			r.rollback()
		}
		for _, tr := range r.procs {
			tr.closeFiles()
		}
	}()
	if err := r.createTree(); err != nil {
		return nil, err
	}
	// Then each phase for every process, parents first.
	phases := []struct {
		name string
		fn   func(*taskRestorer) error
	}{
		{"process groups", (*taskRestorer).joinGroup},
		{"threads", (*taskRestorer).createThreads},
		{"files", (*taskRestorer).restoreFiles},
		{"exits", (*taskRestorer).exitIfDead},
		{"task state", (*taskRestorer).restoreState},
		{"credentials", (*taskRestorer).restoreCreds},
		{"resume", (*taskRestorer).resume},
	}
	for _, ph := range phases {
		for _, tr := range r.procs {
			r.log.Debug("restore phase", "phase", ph.name, "pid", tr.t.Tid)
			if err := ph.fn(tr); err != nil {
				return nil, fmt.Errorf("restore pid %d: %s: %w", tr.t.Tid, ph.name, err)
			}
		}
	}
	pid := r.imgs.root.pid()
	r.procs = nil
	if r.opts.PidFile != "" {
		if err := os.WriteFile(r.opts.PidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			return &Restored{Pid: pid}, fmt.Errorf("write pidfile: %w", err)
		}
	}
	r.log.Info("restore done", "pid", pid)
	return &Restored{Pid: pid}, nil
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
	if r.puppet, err = startPuppet(); err != nil {
		return err
	}
	if r.scratchBase, err = scratchHole(r.imgs, r.puppet.tr.Tid); err != nil {
		return err
	}
	r.channelFd = r.imgs.maxFd() + 1
	if err := r.puppet.openChannel(r.channelFd); err != nil {
		return err
	}
	root := r.imgs.root
	t, err := r.puppet.clone(root.pid())
	if err != nil {
		if errors.Is(err, ErrPidInUse) {
			return pidInUse(root.pid())
		}
		return err
	}
	tr := r.newTaskRestorer(t, root)
	via := r.puppet.tr.SyscallIP
	r.puppet.kill()
	r.puppet = nil
	if err := tr.mapScratch(via); err != nil {
		return err
	}
	return tr.create()
}

// rollback kills everything the restore created and waits until none of
// it exists any more: stasis reaps each task as its tracer, and as the
// subreaper that the orphaned zombies of the tree end up with.
func (r *restorer) rollback() {
	var tids []int
	for _, tr := range r.procs {
		_ = unix.Kill(tr.t.Tid, unix.SIGKILL)
		tids = append(tids, tr.t.Tid)
		for _, t := range tr.threads {
			tids = append(tids, t.Tid)
		}
	}
	deadline := time.Now().Add(zombieWait)
	for _, tid := range tids {
		for time.Now().Before(deadline) {
			var ws unix.WaitStatus
			_, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
			if err == unix.ECHILD {
				if _, serr := os.Stat(fmt.Sprintf("/proc/%d", tid)); serr != nil {
					break // gone
				}
			}
			time.Sleep(time.Millisecond)
		}
	}
	r.procs = nil
	if r.puppet != nil {
		r.puppet.kill()
		r.puppet = nil
	}
}

// zombieWait bounds how long restore waits for the parent of a killed
// process (often init) to reap it: the zombie keeps the pid until then.
const zombieWait = 5 * time.Second

func checkPidFree(pid int) error {
	deadline := time.Now().Add(zombieWait)
	for {
		st, err := proc.ReadStat(pid)
		if err != nil {
			break // no such task
		}
		if st.State != 'Z' || time.Now().After(deadline) {
			return pidInUse(pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	max, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err == nil {
		if m, err := strconv.Atoi(string(max[:len(max)-1])); err == nil && pid >= m {
			return fmt.Errorf("pid %d is above this host's pid_max %d (raise /proc/sys/kernel/pid_max)", pid, m)
		}
	}
	return nil
}

func pidInUse(pid int) error {
	who := ""
	if st, err := proc.ReadStat(pid); err == nil {
		who = fmt.Sprintf(" (held by %s, state %c)", st.Comm, st.State)
	}
	return fmt.Errorf("restore pid %d: %w%s", pid, ErrPidInUse, who)
}
