package kerndat

import (
	"slices"
	"strings"
)

// criuFeatures answers `criu check --feature NAME` for every name of criu
// 4.2: here those answered from Probe's features, in criu_features.go the
// others. The RPC FEATURE_CHECK fields map onto them as criu does:
// mem_track is mem_dirty_track, lazy_pages is uffd-noncoop, pidfd_store is
// pidfd_store (all three "no" today, as internal/rpc answers).
var criuFeatures = map[string]func() (bool, string){
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
// name that is not criu's.
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
