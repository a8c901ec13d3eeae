package kerndat

import (
	"fmt"
	"slices"
	"strings"
)

// criuFeatures answers `criu check --feature NAME` for the names of
// criu/cr-check.c that stasis can answer from its probes. The RPC
// FEATURE_CHECK fields map onto them as criu does: mem_track is
// mem_dirty_track, lazy_pages is uffd-noncoop, pidfd_store is pidfd_store.
var criuFeatures = map[string]func() (bool, string){
	// criu answers from soft-dirty only; stasis tracks writes with
	// PAGEMAP_SCAN on a uffd WP_ASYNC registration where soft-dirty is
	// missing (as on 6.18 kernels built without CONFIG_MEM_SOFT_DIRTY).
	"mem_dirty_track": func() (bool, string) {
		sd, _ := Lookup(SoftDirty)
		if sd.OK {
			return true, "soft-dirty: " + sd.Detail
		}
		scan, _ := Lookup(PagemapScan)
		wp, _ := Lookup(UffdWPAsync)
		if scan.OK && wp.OK {
			return true, "PAGEMAP_SCAN with uffd WP_ASYNC (no soft-dirty)"
		}
		return false, fmt.Sprintf("soft-dirty: %s; PAGEMAP_SCAN: %s; uffd WP_ASYNC: %s", sd.Detail, scan.Detail, wp.Detail)
	},
	"uffd":            all(Userfaultfd),
	"uffd-noncoop":    all(Userfaultfd, UffdNonCoop),
	"pidfd_store":     all(PidfdGetfd),
	"clone3_set_tid":  all(Clone3SetTID),
	"get_rseq_conf":   all(PtraceRseq),
	"can_map_vdso":    all(MapVDSO),
	"timens":          all(TimeNamespace),
	"seccomp_suspend": all(PtraceSuspendSeccomp),
	"seccomp_filters": all(PtraceSeccompFilter),
	"mnt_id":          all(FdinfoMntID),
	"pagemap_scan":    all(PagemapScan),
}

func all(names ...string) func() (bool, string) {
	return func() (bool, string) {
		var details []string
		okAll := true
		for _, n := range names {
			f, _ := Lookup(n)
			okAll = okAll && f.OK
			details = append(details, f.Name+": "+f.Detail)
		}
		return okAll, strings.Join(details, "; ")
	}
}

// CRIUFeature answers criu's `check --feature NAME`. known is false for a
// name stasis does not answer (criu's own list is longer).
func CRIUFeature(name string) (supported bool, detail string, known bool) {
	fn, known := criuFeatures[name]
	if !known {
		return false, "", false
	}
	supported, detail = fn()
	return supported, detail, true
}

// CRIUFeatureNames lists the names CRIUFeature answers, sorted.
func CRIUFeatureNames() []string {
	var names []string
	for n := range criuFeatures {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
