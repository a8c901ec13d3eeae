package kerndat

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

// probeMMMap asks for sizeof(struct prctl_mm_map). The option exists only
// with CONFIG_CHECKPOINT_RESTORE and, unlike the single-field PR_SET_MM_*
// options, PR_SET_MM_MAP does not need CAP_SYS_RESOURCE (kernel/sys.c
// prctl_set_mm). A real PR_SET_MM_MAP on ourselves would rewrite our own
// mm fields, so the size query is as far as an in-process probe goes.
func probeMMMap() []Feature {
	s, err := newScratch(4096)
	if err != nil {
		return withInfo(missing(SetMMMap, "mmap: %v", err))
	}
	defer s.free()
	size := at[uint32](s, 0)
	_, _, e := unix.Syscall6(unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP_SIZE, s.addr(0), 0, 0, 0)
	if e != 0 {
		return withInfo(missing(SetMMMap, "prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE): %v", e))
	}
	if *size != linux.PrctlMMMapSize {
		return withInfo(missing(SetMMMap, "struct prctl_mm_map is %d bytes, stasis knows %d", *size, linux.PrctlMMMapSize))
	}
	return withInfo(ok(SetMMMap, fmt.Sprintf("PR_SET_MM_MAP_SIZE %d", *size)))
}
