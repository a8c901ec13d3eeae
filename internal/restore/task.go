package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"strings"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/interrupt"
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

// taskRestorer turns one freshly cloned process into its image.
type taskRestorer struct {
	r       *restorer
	t       *ptrace.Task   // the leader
	threads []*ptrace.Task // the other threads, in the order of img.threads
	img     *taskImages
	s       *ptrace.Scratch // data part of the scratch mapping
}

func (r *restorer) newTaskRestorer(t *ptrace.Task, img *taskImages) *taskRestorer {
	t.SyscallIP = r.scratchBase
	tr := &taskRestorer{r: r, t: t, img: img,
		s: &ptrace.Scratch{Pid: t.Tid, Addr: r.scratchBase + mem.PageSize, Size: scratchSize - mem.PageSize}}
	r.procs = append(r.procs, tr)
	return tr
}

// allThreads returns the leader and the other threads with their images.
func (tr *taskRestorer) allThreads() ([]*ptrace.Task, []*criucore.CoreEntry) {
	return append([]*ptrace.Task{tr.t}, tr.threads...), append([]*criucore.CoreEntry{tr.img.core}, tr.img.threads...)
}

// scratchHole finds an address range free in every process of the image
// (and in the puppet), where each task keeps its injection page until the
// end: children inherit it from their parent.
func scratchHole(s *imageSet, puppetPid int) (uint64, error) {
	cur, err := proc.ReadMaps(puppetPid)
	if err != nil {
		return 0, err
	}
	var busy [][2]uint64
	for _, v := range cur {
		busy = append(busy, [2]uint64{v.Start, v.End})
	}
	for _, ti := range s.all {
		for _, v := range ti.mm.GetVmas() {
			lo := v.GetStart()
			if v.GetFlags()&unix.MAP_GROWSDOWN != 0 && lo > stackGap {
				lo -= stackGap
			}
			busy = append(busy, [2]uint64{lo, v.GetEnd()})
		}
	}
	base, ok := findHole(busy, scratchSize)
	if !ok {
		return 0, fmt.Errorf("no free address range for %d bytes of scratch memory", scratchSize)
	}
	return base, nil
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

// mapScratch creates the injection page in the root task (children
// inherit it): syscall; int3 at its start, pointer arguments after.
func (tr *taskRestorer) mapScratch(via uint64) error {
	tr.t.SyscallIP = via
	if _, err := ptrace.MapScratch(tr.t, tr.r.scratchBase, scratchSize); err != nil {
		return err
	}
	if err := ptrace.WriteMem(tr.t.Tid, tr.r.scratchBase, []byte(syscallTrapBytes)); err != nil {
		return err
	}
	tr.t.SyscallIP = tr.r.scratchBase
	return nil
}

// emptyAddressSpace unmaps everything the root task inherited from the
// puppet but the scratch page ([vsyscall] cannot be unmapped and is the
// same in every process), and closes the puppet's fds but the channel.
func (tr *taskRestorer) emptyAddressSpace() error {
	cur, err := proc.ReadMaps(tr.t.Tid)
	if err != nil {
		return err
	}
	for _, v := range cur {
		if v.Start == tr.r.scratchBase || v.Path == "[vsyscall]" {
			continue
		}
		if _, err := tr.t.Call("munmap", unix.SYS_MUNMAP, v.Start, v.End-v.Start); err != nil {
			return fmt.Errorf("%#x-%#x (%s): %w", v.Start, v.End, v.Path, err)
		}
	}
	ch := uint64(tr.r.channelFd)
	if _, err := tr.t.Call("close_range", unix.SYS_CLOSE_RANGE, 0, ch-1, 0); err != nil {
		return err
	}
	_, err = tr.t.Call("close_range", unix.SYS_CLOSE_RANGE, ch+1, ^uint64(0)>>32, 0)
	return err
}

// closeChannel closes the task's pidfd of stasis once it has all its
// files (see restorer.channelFd).
func (tr *taskRestorer) closeChannel() error {
	_, err := tr.t.Call("close channel", unix.SYS_CLOSE, uint64(tr.r.channelFd))
	return err
}

// pass puts a copy of the file with the given id into the task and
// returns its fd number there (the lowest free one, close-on-exec).
func (tr *taskRestorer) pass(id uint32) (uint64, error) {
	f, err := tr.r.files.Open(id)
	if err != nil {
		return 0, err
	}
	return tr.passFile(f)
}

// passFile puts a copy of stasis' file f into the task, as pass does.
func (tr *taskRestorer) passFile(f *os.File) (uint64, error) {
	return tr.t.Call("pidfd_getfd", unix.SYS_PIDFD_GETFD, uint64(tr.r.channelFd), uint64(f.Fd()), 0)
}

// restoreMemory gives the task its image's address space. The root
// starts from an empty one. A child starts from a copy of its parent's
// (it was cloned from it): mappings that are the same in both images are
// kept, so that pages still shared copy-on-write stay shared, and only the
// child's pages that differ are written.
func (tr *taskRestorer) restoreMemory(parent *taskImages) error {
	vmas := tr.img.mm.GetVmas()
	var kept map[uint64]bool
	if parent == nil || !parent.live() {
		if err := tr.emptyAddressSpace(); err != nil {
			return err
		}
	} else {
		var err error
		if kept, err = tr.keepInherited(parent); err != nil {
			return err
		}
	}
	open := func(e *vma.VmaEntry) (int, error) {
		if e.GetStatus()&mem.AnonShared != 0 {
			f, err := tr.r.shmem.open(tr.r.imgs, e.GetShmid())
			if err != nil {
				return 0, err
			}
			fd, err := tr.passFile(f)
			return int(fd), err
		}
		if e.Fdflags == nil {
			fd, err := tr.pass(uint32(e.GetShmid()))
			return int(fd), err
		}
		f, err := tr.r.files.OpenMapping(uint32(e.GetShmid()), e.GetFdflags())
		if err != nil {
			return 0, err
		}
		fd, err := tr.passFile(f)
		return int(fd), err
	}
	if err := mem.MapAreas(tr.t, vmas, tr.img.paged, kept, open); err != nil {
		return err
	}
	pages, err := tr.r.imgs.openPages(tr.img)
	if err != nil {
		return err
	}
	defer pages.Close()
	st, err := mem.FillPages(tr.t.Tid, tr.img.pagemap, pages, vmas, kept, func() error {
		interrupt.At(tr.r.ctx, "restore-page-fill")
		return interrupt.Check(tr.r.ctx, fmt.Sprintf("restore phase memory (pid %d)", tr.t.Tid))
	})
	if err != nil {
		return fmt.Errorf("%s: %w", pages.Name(), err)
	}
	tr.r.stats.add(st)
	tr.r.log.Debug("pages restored", "pid", tr.t.Tid, "written", st.Restored, "compared", st.Compared, "shared", st.SkippedCOW)
	if err := tr.restoreAioRings(); err != nil {
		return err
	}
	if err := mem.Protect(tr.t, vmas, tr.img.pagemap, tr.img.paged, kept); err != nil {
		return err
	}
	return tr.restoreVDSO(kept)
}

// keepInherited unmaps what the task inherited from its parent but does
// not have itself, and returns the start addresses of the VMAs it keeps:
// those with the same range and origin in both images. The kernel may have
// merged adjacent mappings in the restored parent, so what is unmapped is
// computed in address ranges, not in the parent's current VMAs.
func (tr *taskRestorer) keepInherited(parent *taskImages) (map[uint64]bool, error) {
	cur, err := proc.ReadMaps(tr.t.Tid)
	if err != nil {
		return nil, err
	}
	mapped := func(start, end uint64) bool {
		for _, c := range cur {
			if c.Start <= start && start < c.End {
				start = c.End
			}
			if start >= end {
				return true
			}
		}
		return start >= end
	}
	theirs := map[uint64]*vma.VmaEntry{}
	for _, v := range parent.mm.GetVmas() {
		theirs[v.GetStart()] = v
	}
	kept := map[uint64]bool{}
	var keep [][2]uint64
	for _, mine := range tr.img.mm.GetVmas() {
		t := theirs[mine.GetStart()]
		if t != nil && t.GetEnd() == mine.GetEnd() && mem.SameOrigin(mine, t, tr.r.imgs.sameFile) && mapped(mine.GetStart(), mine.GetEnd()) {
			kept[mine.GetStart()] = true
			keep = append(keep, [2]uint64{mine.GetStart(), mine.GetEnd()})
		}
	}
	tr.r.log.Debug("inherited mappings kept", "pid", tr.t.Tid, "kept", len(kept), "vmas", len(tr.img.mm.GetVmas()))
	keep = append(keep, [2]uint64{tr.r.scratchBase, tr.r.scratchBase + scratchSize})
	for _, c := range cur {
		if c.Path == "[vsyscall]" {
			continue
		}
		for _, g := range uncovered(c.Start, c.End, keep) {
			if _, err := tr.t.Call("munmap", unix.SYS_MUNMAP, g[0], g[1]-g[0]); err != nil {
				return nil, fmt.Errorf("%#x-%#x (%s): %w", g[0], g[1], c.Path, err)
			}
		}
	}
	return kept, nil
}

// uncovered returns the parts of [start, end) outside every range of keep.
func uncovered(start, end uint64, keep [][2]uint64) [][2]uint64 {
	out := [][2]uint64{{start, end}}
	for _, k := range keep {
		var next [][2]uint64
		for _, r := range out {
			if k[1] <= r[0] || k[0] >= r[1] {
				next = append(next, r)
				continue
			}
			if r[0] < k[0] {
				next = append(next, [2]uint64{r[0], k[0]})
			}
			if k[1] < r[1] {
				next = append(next, [2]uint64{k[1], r[1]})
			}
		}
		out = next
	}
	return out
}

// restoreAioRings makes the AIO contexts again, each in place of the
// mapping that holds its dumped ring by now (mem.RestoreAioRing).
func (tr *taskRestorer) restoreAioRings() error {
	rings := map[uint64]*mm.AioRingEntry{}
	for _, r := range tr.img.mm.GetAios() {
		rings[r.GetId()] = r
	}
	for _, e := range tr.img.mm.GetVmas() {
		if e.GetStatus()&mem.AreaAIORing == 0 {
			continue
		}
		ring := rings[e.GetStart()]
		if ring == nil {
			return fmt.Errorf("AIO ring at %#x has no aio entry in the mm image: %w", e.GetStart(), images.ErrCorrupt)
		}
		if err := mem.RestoreAioRing(tr.t, tr.s, e, ring); err != nil {
			return err
		}
	}
	return nil
}

// restoreVDSO asks the kernel for a vDSO at the address the image had it,
// so that code which cached vDSO pointers (glibc does, at startup) keeps
// working. The layout of vvar/vvar_vclock/vdso must match this kernel's.
func (tr *taskRestorer) restoreVDSO(kept map[uint64]bool) error {
	var img []vdsoPart
	for _, v := range tr.img.mm.GetVmas() {
		if v.GetStatus()&(mem.AreaVDSO|mem.AreaVVAR) != 0 {
			if kept[v.GetStart()] {
				return nil // inherited from the parent, already in place
			}
			img = addVDSOPart(img, vdsoPart{v.GetStart(), v.GetEnd(), v.GetStatus()&mem.AreaVDSO != 0})
		}
	}
	if len(img) == 0 {
		return nil
	}
	self, err := proc.ReadMaps(os.Getpid())
	if err != nil {
		return err
	}
	var host []vdsoPart
	for _, v := range self {
		if v.Path == "[vdso]" || v.Path == "[vvar]" || v.Path == "[vvar_vclock]" {
			host = addVDSOPart(host, vdsoPart{v.Start, v.End, v.Path == "[vdso]"})
		}
	}
	if !sameLayout(img, host) {
		return fmt.Errorf("the image's vDSO layout %s differs from this kernel's %s: restoring across kernels with different vDSOs is not supported",
			layoutString(img), layoutString(host))
	}
	if _, err := tr.t.Call("arch_prctl(ARCH_MAP_VDSO_64)", unix.SYS_ARCH_PRCTL, archMapVDSO64, img[0].start); err != nil {
		return err
	}
	return nil
}

// vdsoPart is the vDSO's code or a block of its data pages. Data areas
// that follow each other are one block: this kernel shows [vvar] and
// [vvar_vclock], criu 4.2 writes them as one vvar VMA, and only the size
// of the block and where the code lies after it matter to
// ARCH_MAP_VDSO_64.
type vdsoPart struct {
	start, end uint64
	code       bool
}

func addVDSOPart(parts []vdsoPart, p vdsoPart) []vdsoPart {
	if n := len(parts); n > 0 && !p.code && !parts[n-1].code && parts[n-1].end == p.start {
		parts[n-1].end = p.end
		return parts
	}
	return append(parts, p)
}

func sameLayout(a, b []vdsoPart) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].code != b[i].code || a[i].end-a[i].start != b[i].end-b[i].start || a[i].start-a[0].start != b[i].start-b[0].start {
			return false
		}
	}
	return true
}

func layoutString(v []vdsoPart) string {
	s := "["
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		kind := "data"
		if x.code {
			kind = "code"
		}
		s += fmt.Sprintf("%s +%#x:%dp", kind, x.start-v[0].start, (x.end-x.start)/mem.PageSize)
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
	// The exe link can change only while the old exe is not mapped; a
	// child that kept its parent's mappings keeps its exe link too (a
	// binary deleted while it ran is restored unlinked again).
	exe := ^uint64(0)
	cur, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", tr.t.Tid))
	if strings.TrimSuffix(cur, " (deleted)") != tr.r.imgs.files[m.GetExeFileId()].GetReg().GetName() {
		fd, err := tr.pass(m.GetExeFileId())
		if err != nil {
			return fmt.Errorf("exe: %w", err)
		}
		exe = fd
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
	if exe != ^uint64(0) {
		if _, err := tr.t.Call("close", unix.SYS_CLOSE, exe); err != nil {
			return err
		}
	}
	if d := m.GetDumpable(); m.Dumpable != nil && d != 1 {
		if _, err := tr.t.Call("prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(d)); err != nil {
			return err
		}
	}
	if m.GetThpDisabled() {
		if _, err := tr.t.Call("prctl(PR_SET_THP_DISABLE)", unix.SYS_PRCTL, unix.PR_SET_THP_DISABLE, 1); err != nil {
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
	return tr.r.files.RestoreEpollTargets(tr, tr.img.fds)
}
