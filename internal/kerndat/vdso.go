package kerndat

import (
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
)

// VDSOLayout is where the kernel put the vDSO and its data pages in this
// process. ARCH_MAP_VDSO_64 lays them out the same way at any address.
type VDSOLayout struct {
	VvarPages, VvarVclockPages, VdsoPages int
	VdsoStart                             uint64 // address of [vdso] here
	VvarStart                             uint64 // address of [vvar] here, 0 without one
	VdsoOffset                            uint64 // vdso start - vvar start
}

func (l VDSOLayout) String() string {
	return fmt.Sprintf("vvar %dp, vvar_vclock %dp, vdso %dp at +%#x", l.VvarPages, l.VvarVclockPages, l.VdsoPages, l.VdsoOffset)
}

var hostVDSO = sync.OnceValues(func() (VDSOLayout, error) {
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return VDSOLayout{}, err
	}
	defer f.Close()
	vmas, err := proc.ParseMaps(f)
	if err != nil {
		return VDSOLayout{}, fmt.Errorf("/proc/self/maps: %w", err)
	}
	return vdsoLayout(vmas, uint64(os.Getpagesize()))
})

// HostVDSO returns this kernel's vDSO layout, read from /proc/self/maps.
func HostVDSO() (VDSOLayout, error) { return hostVDSO() }

// vdsoLayout finds [vvar], [vvar_vclock] (Linux 6.13+) and [vdso]. The data
// pages must come first and be contiguous with the code: the vDSO reaches
// them at a fixed negative offset, which is why ARCH_MAP_VDSO_64 and mremap
// must keep the whole block together.
func vdsoLayout(vmas []proc.VMA, page uint64) (VDSOLayout, error) {
	var l VDSOLayout
	var vvar, vclock, vdso *proc.VMA
	for i := range vmas {
		v := &vmas[i]
		if v.Inode != 0 {
			continue
		}
		switch v.Path {
		case "[vvar]":
			vvar = v
		case "[vvar_vclock]":
			vclock = v
		case "[vdso]":
			vdso = v
		}
	}
	if vdso == nil {
		return l, fmt.Errorf("no [vdso] in /proc/self/maps (vdso=0 on the kernel command line?): %w", ErrNotSupported)
	}
	l.VdsoPages = int(vdso.Len() / page)
	l.VdsoStart = vdso.Start
	if vvar == nil {
		return l, fmt.Errorf("[vdso] without [vvar]: unknown layout: %w", ErrNotSupported)
	}
	l.VvarPages = int(vvar.Len() / page)
	l.VvarStart = vvar.Start
	end := vvar.End
	if vclock != nil {
		l.VvarVclockPages = int(vclock.Len() / page)
		if vclock.Start != end {
			return l, fmt.Errorf("[vvar_vclock] at %#x does not follow [vvar] ending at %#x: %w", vclock.Start, end, ErrNotSupported)
		}
		end = vclock.End
	}
	if vdso.Start != end {
		return l, fmt.Errorf("[vdso] at %#x does not follow the vvar pages ending at %#x: %w", vdso.Start, end, ErrNotSupported)
	}
	l.VdsoOffset = vdso.Start - vvar.Start
	return l, nil
}

// probeMapVDSO calls arch_prctl(ARCH_MAP_VDSO_64) in our own process, which
// already has a vDSO: map_vdso_once (arch/x86/entry/vdso/vma.c) walks the
// VMAs and returns EEXIST before mapping anything, while a kernel without
// the option (no CONFIG_CHECKPOINT_RESTORE) returns EINVAL. So the call is
// harmless and still a real answer. It is made only when a [vdso] was found,
// because without one the kernel would map a vDSO into us.
func probeMapVDSO() []Feature {
	l, err := HostVDSO()
	if err != nil {
		return withInfo(missing(MapVDSO, "%v", err))
	}
	_, _, e := unix.Syscall(unix.SYS_ARCH_PRCTL, linux.ArchMapVDSO64, uintptr(l.VvarStart), 0)
	switch e {
	case unix.EEXIST:
		return withInfo(ok(MapVDSO, fmt.Sprintf("EEXIST with a vDSO mapped; %s", l)))
	case 0:
		return withInfo(missing(MapVDSO, "arch_prctl(ARCH_MAP_VDSO_64) mapped a second vDSO; %s", l))
	default:
		return withInfo(missing(MapVDSO, "arch_prctl(ARCH_MAP_VDSO_64): %v; %s", e, l))
	}
}
