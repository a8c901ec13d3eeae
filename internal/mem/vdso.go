package mem

import (
	"errors"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/vma"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
)

// The vDSO: the dump injects its system calls through a syscall
// instruction of the task's own vDSO, and saves the vDSO's pages and
// VMAs (criu's restore compares the dumped vDSO's symbols with the
// host's); the restore asks the kernel for this kernel's vDSO at the
// dumped address instead.

// SyscallInsn returns the address of a syscall instruction in pid
// (areas: its classified VMAs), 0 if it has none: the vDSO's first, else
// any executable mapping's (a process may unmap its vDSO; its libc or
// static binary still holds the instruction somewhere, and the bytes
// need not be an instruction of its own code: only the two are run).
func SyscallInsn(pid int, areas []*Area) (uint64, error) {
	for _, a := range areas {
		if a.Has(AreaVDSO) {
			return ptrace.FindSyscallInsn(pid, a.Start(), a.End())
		}
	}
	for _, a := range areas {
		if a.E.GetProt()&unix.PROT_EXEC == 0 || !a.Has(AreaRegular) || a.Has(AreaVVAR) {
			continue
		}
		for start := a.Start(); start < a.End(); start += syscallScanChunk {
			// Chunks overlap by one byte: a pair may straddle them.
			end := min(start+syscallScanChunk+1, a.End())
			ip, err := ptrace.FindSyscallInsn(pid, start, end)
			if err == nil {
				return ip, nil
			}
			if !errors.Is(err, ptrace.ErrNoSyscallInsn) {
				return 0, err
			}
		}
	}
	return 0, nil
}

// syscallScanChunk bounds what one look for a syscall instruction reads
// of a large executable mapping.
const syscallScanChunk = 1 << 20

// restoreVDSO asks the kernel for a vDSO at the address the image had it,
// so that code which cached vDSO pointers (glibc does, at startup) keeps
// working. The layout of vvar/vvar_vclock/vdso must match this kernel's.
func restoreVDSO(t remote.Task, vmas []*vma.VmaEntry, kept map[uint64]bool) error {
	var img []vdsoPart
	for _, v := range vmas {
		if v.GetStatus()&(AreaVDSO|AreaVVAR) != 0 {
			if kept[v.GetStart()] {
				return nil // inherited from the parent, already in place
			}
			img = addVDSOPart(img, vdsoPart{v.GetStart(), v.GetEnd(), v.GetStatus()&AreaVDSO != 0})
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
		return fmt.Errorf("the image's vDSO layout %s differs from this kernel's %s: restoring across kernels with different vDSOs is %w",
			layoutString(img), layoutString(host), linux.ErrNotSupported)
	}
	if _, err := t.Call("arch_prctl(ARCH_MAP_VDSO_64)", unix.SYS_ARCH_PRCTL, linux.ArchMapVDSO64, img[0].start); err != nil {
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
		s += fmt.Sprintf("%s +%#x:%dp", kind, x.start-v[0].start, (x.end-x.start)/PageSize)
	}
	return s + "]"
}
