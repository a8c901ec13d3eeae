package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/core"
	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

const (
	scratchPages = 16
	scratchSize  = scratchPages * mem.PageSize
	// stackGap keeps the scratch mapping clear of a growsdown stack's
	// guard gap (stack_guard_gap is 256 pages).
	stackGap         = 1 << 20
	archMapVDSO64    = 0x2003         // ARCH_MAP_VDSO_64, asm/prctl.h
	prSetMMMap       = 14             // PR_SET_MM_MAP, linux/prctl.h
	prctlMMMapSize   = 104            // sizeof(struct prctl_mm_map)
	syscallTrapBytes = "\x0f\x05\xcc" // syscall; int3
)

// taskRestorer turns one freshly cloned task into its image.
type taskRestorer struct {
	r     *restorer
	t     *ptrace.Task
	img   *taskImages
	base  uint64          // scratch mapping: syscall instruction at base
	s     *ptrace.Scratch // data part of the scratch mapping
	pidfd uint64          // pidfd of stasis inside the task
	open  map[uint32]*os.File
}

func (tr *taskRestorer) restore() error {
	tr.open = map[uint32]*os.File{}
	defer func() {
		for _, f := range tr.open {
			f.Close()
		}
	}()
	phases := []struct {
		name string
		fn   func() error
	}{
		{"scratch", tr.setupScratch},
		{"empty address space", tr.emptyAddressSpace},
		{"fd channel", tr.openChannel},
		{"memory", tr.restoreMemory},
		{"vdso", tr.restoreVDSO},
		{"mm", tr.restoreMM},
		{"fs", tr.restoreFS},
		{"fds", tr.restoreFds},
		{"session", tr.restoreSession},
		{"close fd channel", tr.closeChannel},
		{"task state", func() error { return core.Restore(tr.t, tr.s, tr.img.core) }},
		{"registers", tr.resume},
	}
	for _, ph := range phases {
		tr.r.log.Debug("restore phase", "phase", ph.name, "pid", tr.t.Tid)
		if err := ph.fn(); err != nil {
			return fmt.Errorf("restore pid %d: %s: %w", tr.t.Tid, ph.name, err)
		}
	}
	return nil
}

// setupScratch maps the page stasis injects through (and passes pointer
// arguments in) at an address that is free both in the puppet-inherited
// layout and in the image's, so that it survives until the very end.
func (tr *taskRestorer) setupScratch() error {
	if err := ptrace.SetSigmask(tr.t.Tid, ^uint64(0)); err != nil {
		return err
	}
	cur, err := proc.ReadMaps(tr.t.Tid)
	if err != nil {
		return err
	}
	var busy [][2]uint64
	for _, v := range cur {
		busy = append(busy, [2]uint64{v.Start, v.End})
	}
	for _, v := range tr.img.mm.GetVmas() {
		lo := v.GetStart()
		if v.GetFlags()&unix.MAP_GROWSDOWN != 0 && lo > stackGap {
			lo -= stackGap
		}
		busy = append(busy, [2]uint64{lo, v.GetEnd()})
	}
	base, ok := findHole(busy, scratchSize)
	if !ok {
		return fmt.Errorf("no free address range for %d bytes of scratch memory", scratchSize)
	}
	if _, err := ptrace.MapScratch(tr.t, base, scratchSize); err != nil {
		return err
	}
	if err := ptrace.WriteMem(tr.t.Tid, base, []byte(syscallTrapBytes)); err != nil {
		return err
	}
	tr.base = base
	tr.t.SyscallIP = base
	tr.s = &ptrace.Scratch{Pid: tr.t.Tid, Addr: base + mem.PageSize, Size: scratchSize - mem.PageSize}
	return nil
}

// findHole returns the lowest address above 4 GiB (or failing that above
// 1 MiB) with size bytes free and a 1 MiB margin on both sides.
func findHole(busy [][2]uint64, size uint64) (uint64, bool) {
	sort.Slice(busy, func(i, j int) bool { return busy[i][0] < busy[j][0] })
	const margin = 1 << 20
	const top = 0x7ffffffff000
	for _, floor := range []uint64{1 << 32, 1 << 20} {
		cand := floor
		for _, b := range busy {
			if b[1]+margin <= cand {
				continue
			}
			if cand+size+margin <= b[0] {
				break
			}
			cand = (b[1] + margin + mem.PageSize - 1) &^ (mem.PageSize - 1)
		}
		if cand+size+margin <= top {
			return cand, true
		}
	}
	return 0, false
}

// emptyAddressSpace unmaps everything the task inherited from the puppet
// but the scratch page ([vsyscall] cannot be unmapped and is the same in
// every process).
func (tr *taskRestorer) emptyAddressSpace() error {
	cur, err := proc.ReadMaps(tr.t.Tid)
	if err != nil {
		return err
	}
	for _, v := range cur {
		if v.Start == tr.base || v.Path == "[vsyscall]" {
			continue
		}
		if _, err := tr.t.Call("munmap", unix.SYS_MUNMAP, v.Start, v.End-v.Start); err != nil {
			return fmt.Errorf("%#x-%#x (%s): %w", v.Start, v.End, v.Path, err)
		}
	}
	// The puppet's own fds (stasis' stdio) must not leak into the task.
	_, err = tr.t.Call("close_range", unix.SYS_CLOSE_RANGE, 0, ^uint64(0)>>32, 0)
	return err
}

// openChannel gives the task a pidfd of stasis, through which it takes
// the files stasis opens for it (pidfd_getfd), placed above every fd
// number of the image.
func (tr *taskRestorer) openChannel() error {
	fd, err := tr.t.Call("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	if err != nil {
		return err
	}
	high := uint64(0)
	for _, f := range tr.img.fds {
		high = max(high, uint64(f.GetFd())+1)
	}
	if fd >= high {
		tr.pidfd = fd
		return nil
	}
	nfd, err := tr.t.Call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, fd, unix.F_DUPFD_CLOEXEC, high)
	if err != nil {
		return err
	}
	if _, err := tr.t.Call("close", unix.SYS_CLOSE, fd); err != nil {
		return err
	}
	tr.pidfd = nfd
	return nil
}

func (tr *taskRestorer) closeChannel() error {
	_, err := tr.t.Call("close", unix.SYS_CLOSE, tr.pidfd)
	return err
}

// file opens (once) the file with the given id of files.img in stasis.
func (tr *taskRestorer) file(id uint32) (*os.File, error) {
	if f, ok := tr.open[id]; ok {
		return f, nil
	}
	fe := tr.r.imgs.files[id]
	if fe == nil {
		return nil, fmt.Errorf("file id %d is not in files.img", id)
	}
	f, err := files.Open(fe)
	if err != nil {
		return nil, err
	}
	tr.open[id] = f
	return f, nil
}

// pass puts a copy of the file with the given id into the task and
// returns its fd number there (the lowest free one, close-on-exec).
func (tr *taskRestorer) pass(id uint32) (uint64, error) {
	f, err := tr.file(id)
	if err != nil {
		return 0, err
	}
	return tr.t.Call("pidfd_getfd", unix.SYS_PIDFD_GETFD, tr.pidfd, uint64(f.Fd()), 0)
}

func (tr *taskRestorer) restoreMemory() error {
	vmas := tr.img.mm.GetVmas()
	open := func(e *vma.VmaEntry) (int, error) {
		fd, err := tr.pass(uint32(e.GetShmid()))
		return int(fd), err
	}
	if err := mem.MapAreas(tr.t, vmas, tr.img.paged, open); err != nil {
		return err
	}
	pages, err := tr.r.imgs.openPages(tr.img)
	if err != nil {
		return err
	}
	defer pages.Close()
	if err := mem.FillPages(tr.t.Tid, tr.img.pagemap, pages); err != nil {
		return fmt.Errorf("%s: %w", pages.Name(), err)
	}
	return mem.Protect(tr.t, vmas, tr.img.paged)
}

// restoreVDSO asks the kernel for a vDSO at the address the image had it,
// so that code which cached vDSO pointers (glibc does, at startup) keeps
// working. The layout of vvar/vvar_vclock/vdso must match this kernel's.
func (tr *taskRestorer) restoreVDSO() error {
	var img []proc.VMA
	for _, v := range tr.img.mm.GetVmas() {
		if v.GetStatus()&(mem.AreaVDSO|mem.AreaVVAR) != 0 {
			img = append(img, proc.VMA{Start: v.GetStart(), End: v.GetEnd()})
		}
	}
	if len(img) == 0 {
		return nil
	}
	self, err := proc.ReadMaps(os.Getpid())
	if err != nil {
		return err
	}
	var host []proc.VMA
	for _, v := range self {
		if v.Path == "[vdso]" || v.Path == "[vvar]" || v.Path == "[vvar_vclock]" {
			host = append(host, v)
		}
	}
	if !sameLayout(img, host) {
		return fmt.Errorf("the image's vDSO layout %s differs from this kernel's %s: restoring across kernels with different vDSOs is not supported",
			layoutString(img), layoutString(host))
	}
	if _, err := tr.t.Call("arch_prctl(ARCH_MAP_VDSO_64)", unix.SYS_ARCH_PRCTL, archMapVDSO64, img[0].Start); err != nil {
		return err
	}
	return nil
}

func sameLayout(a, b []proc.VMA) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].End-a[i].Start != b[i].End-b[i].Start || a[i].Start-a[0].Start != b[i].Start-b[0].Start {
			return false
		}
	}
	return true
}

func layoutString(v []proc.VMA) string {
	s := "["
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("+%#x:%dp", x.Start-v[0].Start, (x.End-x.Start)/mem.PageSize)
	}
	return s + "]"
}

// restoreMM sets the mm fields /proc shows (code, data, brk, stack, args,
// env), auxv and the exe link in one PR_SET_MM_MAP, the only form allowed
// without CAP_SYS_RESOURCE.
func (tr *taskRestorer) restoreMM() error {
	m := tr.img.mm
	auxv := make([]byte, 8*len(m.GetMmSavedAuxv()))
	for i, w := range m.GetMmSavedAuxv() {
		binary.LittleEndian.PutUint64(auxv[8*i:], w)
	}
	auxvAddr, err := tr.s.Put(512, auxv)
	if err != nil {
		return err
	}
	exe, err := tr.pass(m.GetExeFileId())
	if err != nil {
		return fmt.Errorf("exe: %w", err)
	}
	b := make([]byte, prctlMMMapSize)
	le := binary.LittleEndian
	for i, v := range []uint64{
		m.GetMmStartCode(), m.GetMmEndCode(), m.GetMmStartData(), m.GetMmEndData(),
		m.GetMmStartBrk(), m.GetMmBrk(), m.GetMmStartStack(),
		m.GetMmArgStart(), m.GetMmArgEnd(), m.GetMmEnvStart(), m.GetMmEnvEnd(), auxvAddr,
	} {
		le.PutUint64(b[8*i:], v)
	}
	le.PutUint32(b[96:], uint32(len(auxv)))
	le.PutUint32(b[100:], uint32(exe))
	a, err := tr.s.Put(0, b)
	if err != nil {
		return err
	}
	if _, err := tr.t.Call("prctl(PR_SET_MM, PR_SET_MM_MAP)", unix.SYS_PRCTL, unix.PR_SET_MM, prSetMMMap, a, prctlMMMapSize); err != nil {
		return err
	}
	if _, err := tr.t.Call("close", unix.SYS_CLOSE, exe); err != nil {
		return err
	}
	if d := m.GetDumpable(); m.Dumpable != nil && d != 1 {
		if _, err := tr.t.Call("prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(d)); err != nil {
			return err
		}
	}
	return nil
}

// restoreFS sets root, cwd and umask.
func (tr *taskRestorer) restoreFS() error {
	fsE := tr.img.fs
	if root := tr.r.imgs.files[fsE.GetRootId()].GetReg().GetName(); root != "/" {
		fd, err := tr.pass(fsE.GetRootId())
		if err != nil {
			return err
		}
		if _, err := tr.t.Call("fchdir", unix.SYS_FCHDIR, fd); err != nil {
			return fmt.Errorf("root %s: %w", root, err)
		}
		dot, err := tr.s.Put(0, []byte(".\x00"))
		if err != nil {
			return err
		}
		if _, err := tr.t.Call("chroot", unix.SYS_CHROOT, dot); err != nil {
			return fmt.Errorf("root %s: %w", root, err)
		}
		if _, err := tr.t.Call("close", unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	fd, err := tr.pass(fsE.GetCwdId())
	if err != nil {
		return fmt.Errorf("cwd: %w", err)
	}
	if _, err := tr.t.Call("fchdir", unix.SYS_FCHDIR, fd); err != nil {
		return fmt.Errorf("cwd %s: %w", tr.r.imgs.files[fsE.GetCwdId()].GetReg().GetName(), err)
	}
	if _, err := tr.t.Call("close", unix.SYS_CLOSE, fd); err != nil {
		return err
	}
	_, err = tr.t.Call("umask", unix.SYS_UMASK, uint64(fsE.GetUmask()))
	return err
}

// restoreFds puts every fd of the image at its number. Fds with the same
// file id share one open file description (and so its offset).
func (tr *taskRestorer) restoreFds() error {
	for _, fe := range tr.img.fds {
		tmp, err := tr.pass(fe.GetId())
		if err != nil {
			return fmt.Errorf("fd %d: %w", fe.GetFd(), err)
		}
		target := uint64(fe.GetFd())
		cloexec := fe.GetFlags()&unix.FD_CLOEXEC != 0
		if tmp == target {
			// pidfd_getfd sets close-on-exec; dup3(fd, fd) is EINVAL.
			if !cloexec {
				if _, err := tr.t.Call("fcntl(F_SETFD)", unix.SYS_FCNTL, tmp, unix.F_SETFD, 0); err != nil {
					return err
				}
			}
			continue
		}
		var flags uint64
		if cloexec {
			flags = unix.O_CLOEXEC
		}
		if _, err := tr.t.Call("dup3", unix.SYS_DUP3, tmp, target, flags); err != nil {
			return fmt.Errorf("fd %d: %w", target, err)
		}
		if _, err := tr.t.Call("close", unix.SYS_CLOSE, tmp); err != nil {
			return err
		}
	}
	return nil
}

// restoreSession makes the task lead its session or group again. A task
// whose session is outside the tree (dumped with --shell-job) joins the
// session of `stasis restore`.
func (tr *taskRestorer) restoreSession() error {
	pid := uint64(tr.t.Tid)
	pe := tr.img.pstree
	switch {
	case uint64(pe.GetSid()) == pid:
		_, err := tr.t.Call("setsid", unix.SYS_SETSID)
		return err
	case uint64(pe.GetPgid()) == pid:
		_, err := tr.t.Call("setpgid", unix.SYS_SETPGID, 0, 0)
		return err
	case !tr.r.opts.ShellJob:
		return fmt.Errorf("session %d of pid %d is not in the images: %w (restore with -j/--shell-job)", pe.GetSid(), pid, ErrBadImage)
	}
	return nil
}

// resume drops the scratch mapping and lets the task run on its own
// registers. The munmap is the last injected call: it is stepped from the
// scratch page itself, and the trap after it comes before the CPU fetches
// anything from the now unmapped page; at that stop the registers are
// replaced by the image's.
func (tr *taskRestorer) resume() error {
	regs, xstate, err := core.FinalRegs(tr.t.Tid, tr.img.core)
	if err != nil {
		return err
	}
	if _, err := tr.t.Call("munmap scratch", unix.SYS_MUNMAP, tr.base, scratchSize); err != nil {
		return err
	}
	if err := ptrace.SetRegs(tr.t.Tid, &regs); err != nil {
		return err
	}
	if err := ptrace.SetXState(tr.t.Tid, xstate); err != nil {
		return err
	}
	if err := ptrace.SetSigmask(tr.t.Tid, tr.img.core.GetTc().GetBlkSigset()); err != nil {
		return err
	}
	sig := 0
	if tr.img.core.GetTc().GetTaskState() == core.TaskStopped {
		sig = int(unix.SIGSTOP)
		if s := tr.img.core.GetTc().GetStopSigno(); s != 0 {
			sig = int(s)
		}
	}
	return ptrace.Detach(tr.t.Tid, sig)
}
