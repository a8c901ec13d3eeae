package kerndat

// probeMemTrack answers criu's mem_dirty_track: whether stasis can tell
// which pages a task wrote between the iterations of a chain (pre-dump,
// dump --track-mem), and how. criu answers from soft-dirty only; stasis
// uses PAGEMAP_SCAN with userfaultfd WP_ASYNC first (what these kernels
// have), soft-dirty where that is missing (internal/mem, track.go).
func probeMemTrack() (bool, string) {
	if ok, d := all(PagemapScan, UffdWPAsync)(); ok {
		return true, "tracked with PAGEMAP_SCAN(PAGE_IS_WRITTEN) and userfaultfd WP_ASYNC; " + d
	}
	if ok, d := all(SoftDirty)(); ok {
		return true, "tracked with soft-dirty bits; " + d
	}
	return false, "neither PAGEMAP_SCAN with userfaultfd WP_ASYNC (Linux 6.7) nor soft-dirty (CONFIG_MEM_SOFT_DIRTY)"
}
