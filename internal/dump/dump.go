package dump

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/core"
	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// Options selects what is dumped and what happens to the tree after.
type Options struct {
	Pid          int
	ImagesDir    string
	WorkDir      string
	LeaveRunning bool
	LeaveStopped bool
	ShellJob     bool
	Log          *slog.Logger
}

// Sentinel errors of refused dumps.
var (
	ErrNoProcess      = errors.New("no such process")
	ErrKernelThread   = errors.New("is a kernel thread")
	ErrSelf           = errors.New("is stasis itself")
	ErrNotSupported   = errors.New("not supported yet")
	ErrSessionOutside = errors.New("session outside the dumped tree")
)

// pfKthread is PF_KTHREAD in /proc/PID/stat flags (include/linux/sched.h).
const pfKthread = 0x00200000

// Task ids of a lone task: criu numbers each kind of kernel object from 1
// and gives its own objects (inventory root_ids) the first ids.
const (
	rootObjID = 1
	taskObjID = 2
	pagesID   = 1
)

// task is everything collected about one task of the tree.
type task struct {
	pid     int
	tr      *ptrace.Task
	stopSig unix.Signal // group-stop signal at seize time, 0 if it ran
	blocked uint64      // blocked mask at seize time
	scratch *ptrace.Scratch

	stat   *proc.Stat
	status *proc.Status
	smaps  []proc.VMA

	core   *criucore.CoreEntry
	mm     *mm.MmEntry
	areas  []*mem.Area
	fds    []*fdinfo.FdinfoEntry
	cwdID  uint32
	rootID uint32
}

type dumper struct {
	opts  Options
	log   *slog.Logger
	dir   *images.Dir
	files *files.Table
	root  *task
	stats statsTimes
}

type statsTimes struct {
	start, frozen, memStart, memEnd, end time.Time
	pagesScanned, pagesWritten           uint64
}

// Dump checkpoints the tree rooted at opts.Pid into opts.ImagesDir.
func Dump(opts Options) error {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	d := &dumper{opts: opts, log: opts.Log, files: files.NewTable()}
	return ptrace.RunLocked(d.run)
}

func (d *dumper) run() (err error) {
	d.stats.start = time.Now()
	if err := d.checkTarget(); err != nil {
		return err
	}
	if d.dir, err = images.Create(d.opts.ImagesDir); err != nil {
		return err
	}
	if err := d.seize(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			d.log.Error("dump failed, resuming the tree", "err", err)
			if rerr := d.resume(); rerr != nil {
				err = fmt.Errorf("%w (and resuming pid %d failed: %v)", err, d.root.pid, rerr)
			}
		}
	}()
	phases := []struct {
		name string
		fn   func(*task) error
	}{
		{"check tree", d.checkTree},
		{"task state", d.dumpCore},
		{"files", d.dumpFiles},
		{"memory layout", d.dumpMM},
		{"release scratch", d.unmapScratch},
		{"pages", d.dumpPages},
	}
	for _, ph := range phases {
		d.log.Debug("dump phase", "phase", ph.name, "pid", d.root.pid)
		if err := ph.fn(d.root); err != nil {
			return err
		}
	}
	if err := d.writeImages(); err != nil {
		return err
	}
	return d.finish()
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

func (d *dumper) seize() error {
	pid := d.opts.Pid
	tr, stopSig, err := ptrace.SeizeAndStop(pid)
	if err != nil {
		if st, serr := proc.ReadStatus(pid); serr == nil && st.TracerPid != 0 {
			return fmt.Errorf("seize pid %d: it is traced by pid %d (a debugger or another dump): %w", pid, st.TracerPid, err)
		}
		return fmt.Errorf("seize pid %d: %w", pid, err)
	}
	t := &task{pid: pid, tr: tr, stopSig: stopSig}
	if stopSig == unix.SIGTRAP {
		t.stopSig = 0
	}
	d.root = t
	d.stats.frozen = time.Now()
	// Block every signal while stasis works inside the task so that none
	// is delivered into an injected call; the mask is put back on resume.
	if t.blocked, err = ptrace.GetSigmask(pid); err != nil {
		return d.releaseOnError(err)
	}
	if err := ptrace.SetSigmask(pid, ^uint64(0)); err != nil {
		return d.releaseOnError(err)
	}
	return nil
}

func (d *dumper) releaseOnError(err error) error {
	if rerr := d.resume(); rerr != nil {
		return fmt.Errorf("%w (and resuming failed: %v)", err, rerr)
	}
	return err
}

// checkTree reads the task's /proc state and refuses what this version
// cannot restore, naming it.
func (d *dumper) checkTree(t *task) error {
	var err error
	if t.stat, err = proc.ReadStat(t.pid); err != nil {
		return err
	}
	if t.status, err = proc.ReadStatus(t.pid); err != nil {
		return err
	}
	if t.status.Threads > 1 {
		return fmt.Errorf("pid %d (%s) has %d threads: multithreaded processes are %w", t.pid, t.stat.Comm, t.status.Threads, ErrNotSupported)
	}
	kids, err := proc.Children(t.pid, t.pid)
	if err != nil {
		return err
	}
	if len(kids) > 0 {
		return fmt.Errorf("pid %d (%s) has child %d: process trees are %w", t.pid, t.stat.Comm, kids[0], ErrNotSupported)
	}
	if t.status.Seccomp != 0 {
		return fmt.Errorf("pid %d (%s) runs under seccomp mode %d: seccomp is %w", t.pid, t.stat.Comm, t.status.Seccomp, ErrNotSupported)
	}
	if t.stat.Session != t.pid && !d.opts.ShellJob {
		return fmt.Errorf("pid %d (%s) belongs to session %d, whose leader is not dumped: %w (use -j/--shell-job to restore it into the session of `stasis restore`)",
			t.pid, t.stat.Comm, t.stat.Session, ErrSessionOutside)
	}
	if err := checkNamespaces(t.pid); err != nil {
		return err
	}
	if t.smaps, err = proc.ReadSmaps(t.pid); err != nil {
		return err
	}
	if t.areas, err = mem.Classify(t.pid, t.smaps); err != nil {
		return err
	}
	// Injections go through a syscall instruction of the task's vDSO, and
	// their pointer arguments through a scratch mapping of its own.
	for _, a := range t.areas {
		if a.Has(mem.AreaVDSO) {
			if t.tr.SyscallIP, err = ptrace.FindSyscallInsn(t.pid, a.Start(), a.End()); err != nil {
				return err
			}
		}
	}
	if t.tr.SyscallIP == 0 {
		return fmt.Errorf("pid %d has no [vdso] to inject system calls through: %w", t.pid, ErrNotSupported)
	}
	t.scratch, err = ptrace.MapScratch(t.tr, 0, 4*mem.PageSize)
	return err
}

// checkNamespaces refuses a task that lives in namespaces other than
// stasis' own: restoring them needs namespace support.
func checkNamespaces(pid int) error {
	for _, ns := range []string{"pid", "net", "ipc", "uts", "mnt", "user", "cgroup", "time"} {
		var self, other unix.Stat_t
		if err := unix.Stat("/proc/self/ns/"+ns, &self); err != nil {
			continue
		}
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, ns), &other); err != nil {
			return fmt.Errorf("namespaces of pid %d: %w", pid, err)
		}
		if self.Ino != other.Ino {
			return fmt.Errorf("pid %d is in another %s namespace: namespaces are %w", pid, ns, ErrNotSupported)
		}
	}
	return nil
}

func (d *dumper) dumpCore(t *task) error {
	var err error
	t.core, err = core.Dump(t.tr, t.scratch, t.stat, t.status, t.stopSig)
	if err != nil {
		return err
	}
	// The blocked mask was replaced while seized; record the real one.
	t.core.Tc.BlkSigset = proto.Uint64(t.blocked)
	t.core.ThreadCore.BlkSigset = proto.Uint64(t.blocked)
	return nil
}

func (d *dumper) dumpFiles(t *task) error {
	var err error
	if t.fds, err = d.files.DumpFds(t.pid); err != nil {
		return err
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", t.pid))
	if err != nil {
		return fmt.Errorf("cwd of pid %d: %w", t.pid, err)
	}
	if t.cwdID, err = d.files.AddPath(cwd, unix.O_RDONLY|unix.O_DIRECTORY); err != nil {
		return fmt.Errorf("cwd of pid %d: %w", t.pid, err)
	}
	root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", t.pid))
	if err != nil {
		return fmt.Errorf("root of pid %d: %w", t.pid, err)
	}
	if t.rootID, err = d.files.AddPath(root, unix.O_RDONLY|unix.O_DIRECTORY); err != nil {
		return fmt.Errorf("root of pid %d: %w", t.pid, err)
	}
	return nil
}

func (d *dumper) dumpMM(t *task) error {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", t.pid))
	if err != nil {
		return fmt.Errorf("exe of pid %d: %w", t.pid, err)
	}
	exeID, err := d.files.AddPath(exe, unix.O_RDONLY)
	if err != nil {
		return fmt.Errorf("exe of pid %d: %w", t.pid, err)
	}
	auxv, err := proc.ReadAuxv(t.pid)
	if err != nil {
		return err
	}
	dumpable, err := t.tr.Call("prctl(PR_GET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	if err != nil {
		return err
	}
	brk, err := t.tr.Call("brk", unix.SYS_BRK, 0)
	if err != nil {
		return err
	}
	m := &mm.MmEntry{
		MmStartCode:  proto.Uint64(t.stat.StartCode),
		MmEndCode:    proto.Uint64(t.stat.EndCode),
		MmStartData:  proto.Uint64(t.stat.StartData),
		MmEndData:    proto.Uint64(t.stat.EndData),
		MmStartStack: proto.Uint64(t.stat.StartStack),
		MmStartBrk:   proto.Uint64(t.stat.StartBrk),
		MmBrk:        proto.Uint64(brk),
		MmArgStart:   proto.Uint64(t.stat.ArgStart),
		MmArgEnd:     proto.Uint64(t.stat.ArgEnd),
		MmEnvStart:   proto.Uint64(t.stat.EnvStart),
		MmEnvEnd:     proto.Uint64(t.stat.EnvEnd),
		ExeFileId:    proto.Uint32(exeID),
		MmSavedAuxv:  auxv,
		Dumpable:     proto.Int32(int32(dumpable)),
	}
	for _, a := range t.areas {
		if a.Path != "" {
			flags := uint32(unix.O_RDONLY)
			if a.Has(mem.FileShared) && a.E.GetProt()&unix.PROT_WRITE != 0 {
				flags = unix.O_RDWR
			}
			id, err := d.files.AddPath(a.Path, flags)
			if err != nil {
				return fmt.Errorf("vma %#x-%#x of pid %d: %w", a.Start(), a.End(), t.pid, err)
			}
			a.E.Shmid = proto.Uint64(uint64(id))
			a.E.Fdflags = proto.Uint32(flags)
		}
		m.Vmas = append(m.Vmas, a.E)
	}
	t.mm = m
	return nil
}

func (d *dumper) unmapScratch(t *task) error {
	if t.scratch == nil {
		return nil
	}
	err := t.scratch.Unmap(t.tr)
	t.scratch = nil
	return err
}

func (d *dumper) dumpPages(t *task) error {
	d.stats.memStart = time.Now()
	f, err := d.dir.CreateRaw(pagesName(pagesID))
	if err != nil {
		return err
	}
	entries, st, err := mem.DumpPages(t.pid, t.areas, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	d.stats.memEnd = time.Now()
	d.stats.pagesScanned += st.PagesScanned
	d.stats.pagesWritten += st.PagesWritten
	ents := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(pagesID)}}
	for _, e := range entries {
		ents = append(ents, e)
	}
	return d.dir.Write(fmt.Sprintf("pagemap-%d.img", t.pid), ents...)
}

func pagesName(id int) string { return "pages-" + strconv.Itoa(id) + ".img" }

// finish lets the tree go the way the options ask: killed (the default),
// left running (-R) or left stopped (-s).
func (d *dumper) finish() error {
	t := d.root
	if !d.opts.LeaveRunning && !d.opts.LeaveStopped {
		if err := unix.Kill(t.pid, unix.SIGKILL); err != nil {
			return fmt.Errorf("kill dumped pid %d: %w", t.pid, err)
		}
		// The tracer sees the death first; the parent reaps it after.
		for {
			if _, err := ptrace.Wait(t.pid); err != nil {
				break
			}
			_ = ptrace.Cont(t.pid, 0)
		}
		d.log.Info("dump done, tree killed", "pid", t.pid)
		return nil
	}
	return d.resume()
}

// resume puts the task back as it was at seize time and detaches, on
// success with -R/-s and on every failure path.
func (d *dumper) resume() error {
	t := d.root
	if t == nil {
		return nil
	}
	var errs []error
	if t.scratch != nil {
		if err := t.scratch.Unmap(t.tr); err != nil {
			errs = append(errs, err)
		}
		t.scratch = nil
	}
	if err := t.tr.Restore(); err != nil {
		errs = append(errs, err)
	}
	if err := ptrace.SetSigmask(t.pid, t.blocked); err != nil {
		errs = append(errs, err)
	}
	sig := 0
	switch {
	case d.opts.LeaveStopped:
		sig = int(unix.SIGSTOP)
	case t.stopSig != 0:
		sig = int(t.stopSig)
	}
	if err := ptrace.Detach(t.pid, sig); err != nil {
		errs = append(errs, err)
	}
	// Signals that arrived while the task was held were dequeued by the
	// stops; send them again.
	for _, s := range t.tr.Signals {
		if s != unix.SIGTRAP {
			_ = unix.Tgkill(t.pid, t.pid, s)
		}
	}
	d.root = nil
	return errors.Join(errs...)
}
