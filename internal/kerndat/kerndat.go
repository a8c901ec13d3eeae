package kerndat

import (
	"fmt"
	"sync"
)

// Feature is the result of one probe.
type Feature struct {
	Name     string // one of the constants below
	OK       bool
	Detail   string // what was found, e.g. "EEXIST on a used pid"
	Impact   string // what does not work without it
	Required bool   // stasis check fails without it: dump or restore Require it
	Since    string // the first kernel that has it ("5.5"), "" for what a config option or capability decides
}

// Feature names, in the order Probe reports them.
const (
	CheckpointRestore    = "CONFIG_CHECKPOINT_RESTORE"
	CapCheckpointRestore = "CAP_CHECKPOINT_RESTORE"
	CapSysResource       = "CAP_SYS_RESOURCE"
	PtraceSeize          = "ptrace seize+interrupt"
	PtraceXstate         = "ptrace xstate regset"
	PtraceRseq           = "ptrace rseq config"
	PtraceSuspendSeccomp = "ptrace suspend seccomp"
	PtraceSeccompFilter  = "ptrace seccomp filters"
	Clone3SetTID         = "clone3 set_tid"
	PidMax               = "pid_max"
	SetMMMap             = "PR_SET_MM_MAP"
	MapVDSO              = "ARCH_MAP_VDSO_64"
	PidfdGetfd           = "pidfd_open+getfd"
	Kcmp                 = "kcmp"
	FdinfoMntID          = "fdinfo mnt_id"
	PagemapScan          = "PAGEMAP_SCAN"
	SoftDirty            = "soft-dirty"
	Userfaultfd          = "userfaultfd"
	UffdWPAsync          = "uffd WP_ASYNC"
	UffdNonCoop          = "uffd non-cooperative"
	TimeNamespace        = "time namespaces"
	MembarrierQuery      = "membarrier registrations"
)

// group is a set of features measured together, at most once per process,
// and, unless volatile, at most once per boot and build (cache.go).
type group struct {
	names    []string
	run      func() []Feature
	volatile bool // probed every time: cheap, and may change without a reboot

	mu     sync.Mutex
	res    []Feature
	probed bool // res comes from run in this process, not from the cache
}

// get returns the group's results: from this process, from the cache
// unless fresh, or probed now.
func (g *group) get(fresh bool) []Feature {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.res != nil && (g.probed || !fresh) {
		return g.res
	}
	if !fresh && !g.volatile {
		if fs, ok := cached(g.names); ok {
			g.res = fs
			return fs
		}
	}
	res := g.run()
	if len(res) != len(g.names) {
		panic(fmt.Sprintf("kerndat: probe for %v returned %d features", g.names, len(res)))
	}
	g.res, g.probed = res, true
	if !g.volatile {
		remember(res)
	}
	return res
}

var groups = []*group{
	{names: []string{CheckpointRestore}, run: probeMapFiles},
	{names: []string{CapCheckpointRestore, CapSysResource}, run: probeCaps, volatile: true},
	{names: []string{PtraceSeize, PtraceXstate, PtraceRseq, PtraceSuspendSeccomp, PtraceSeccompFilter}, run: probePtrace},
	{names: []string{Clone3SetTID}, run: probeClone3},
	{names: []string{PidMax}, run: probePidMax, volatile: true},
	{names: []string{SetMMMap}, run: probeMMMap},
	{names: []string{MapVDSO}, run: probeMapVDSO},
	{names: []string{PidfdGetfd}, run: probePidfd},
	{names: []string{Kcmp}, run: probeKcmp},
	{names: []string{FdinfoMntID}, run: probeMntID},
	{names: []string{PagemapScan, SoftDirty}, run: probePagemap},
	{names: []string{Userfaultfd, UffdWPAsync, UffdNonCoop}, run: probeUffd},
	{names: []string{TimeNamespace}, run: probeTimeNS},
	{names: []string{MembarrierQuery}, run: probeMembarrier},
}

// Probe runs every probe (once per process, whatever the cache holds: it
// is `stasis check`), rewrites the cache with the results and returns
// them in a fixed order.
func Probe() []Feature {
	if fs, ok := faked(); ok {
		return fs
	}
	var out []Feature
	for _, g := range groups {
		out = append(out, g.get(true)...)
	}
	flush()
	return out
}

// Lookup returns the result for one feature: this process' or the cache's,
// or probed now.
func Lookup(name string) (Feature, bool) {
	f, ok := lookup(name)
	flush()
	return f, ok
}

// lookup is Lookup without writing the cache.
func lookup(name string) (Feature, bool) {
	if fs, ok := faked(); ok {
		for _, f := range fs {
			if f.Name == name {
				return f, true
			}
		}
		return Feature{}, false
	}
	for _, g := range groups {
		for i, n := range g.names {
			if n == name {
				return g.get(false)[i], true
			}
		}
	}
	return Feature{}, false
}

// Require returns nil if every named feature is present, and otherwise an
// error wrapping ErrNotSupported about the first one missing, which names
// it, the kernel that brought it, what was found and what does not work
// without it: "needs clone3 set_tid (kernel 5.5+): clone3 without set_tid
// (E2BIG); tasks cannot be created with their original PIDs: restore does
// not work: not supported". Only the groups of the named features are
// probed. The engine calls it at the start of a dump, restore or check
// with what it cannot do without, so that a kernel without a feature is
// told so, not left to fail with an errno midway.
func Require(names ...string) error {
	defer flush()
	for _, name := range names {
		f, ok := lookup(name)
		if !ok {
			return fmt.Errorf("needs kernel feature %q, unknown to kerndat: %w", name, ErrNotSupported)
		}
		if f.OK {
			continue
		}
		since := ""
		if f.Since != "" {
			since = " (kernel " + f.Since + "+)"
		}
		return fmt.Errorf("needs %s%s: %s; %s: %w", f.Name, since, f.Detail, f.Impact, ErrNotSupported)
	}
	return nil
}

var fake struct {
	sync.Mutex
	fs []Feature
}

// Fake makes Probe, Lookup and Require answer from fs, as if this kernel
// had exactly the features of fs marked OK, until undo is called: tests
// of what stasis says on a kernel it does not run on. Impact, Required
// and Since are filled in from the table below where fs leaves them
// empty.
func Fake(fs []Feature) (undo func()) {
	fs = append([]Feature(nil), fs...)
	for i := range fs {
		in := info[fs[i].Name]
		if fs[i].Impact == "" {
			fs[i].Impact, fs[i].Required = in.impact, in.required
		}
		if fs[i].Since == "" {
			fs[i].Since = in.since
		}
	}
	fake.Lock()
	fake.fs = fs
	fake.Unlock()
	return func() {
		fake.Lock()
		fake.fs = nil
		fake.Unlock()
	}
}

func faked() ([]Feature, bool) {
	fake.Lock()
	defer fake.Unlock()
	return fake.fs, fake.fs != nil
}

func ok(name, detail string) Feature { return Feature{Name: name, OK: true, Detail: detail} }

func missing(name, format string, args ...any) Feature {
	return Feature{Name: name, Detail: fmt.Sprintf(format, args...)}
}

// withInfo fills in Impact, Required and Since from the table below.
func withInfo(fs ...Feature) []Feature {
	for i := range fs {
		in := info[fs[i].Name]
		fs[i].Impact, fs[i].Required, fs[i].Since = in.impact, in.required, in.since
	}
	return fs
}

// info says, per feature, what does not work without it, whether dump or
// restore needs it (they Require exactly the required ones: see the root
// package's dumpNeeds and restoreNeeds), and since which kernel it exists.
var info = map[string]struct {
	impact   string
	required bool
	since    string
}{
	CheckpointRestore:    {"no /proc/PID/map_files, PR_SET_MM_MAP, set_tid or kcmp: dump and restore do not work", true, ""},
	CapCheckpointRestore: {"clone3 set_tid, exe_fd of PR_SET_MM_MAP and map_files need it (or CAP_SYS_ADMIN): dump and restore do not work", true, "5.9"},
	CapSysResource:       {"only PR_SET_MM_MAP works, not the single PR_SET_MM_* fields; F_SETPIPE_SZ is capped at fs.pipe-max-size; rlimits cannot be raised above the hard limit", false, ""},
	PtraceSeize:          {"tasks cannot be frozen: dump does not work", true, "3.4"},
	PtraceXstate:         {"FPU/SSE/AVX state cannot be saved or restored: dump does not work", true, "2.6.35"},
	PtraceRseq:           {"rseq registrations cannot be read: dump does not work", true, "5.13"},
	PtraceSuspendSeccomp: {"tasks with a seccomp filter cannot be dumped: injected syscalls would be filtered", false, "4.3"},
	PtraceSeccompFilter:  {"seccomp filters cannot be saved: tasks with filters (containers) cannot be dumped", false, "4.4"},
	Clone3SetTID:         {"tasks cannot be created with their original PIDs: restore does not work", true, "5.5"},
	PidMax:               {"dumped PIDs at or above pid_max cannot be restored", false, ""},
	SetMMMap:             {"brk, arg/env, auxv and exe link cannot be restored: restore does not work", true, "3.18"},
	MapVDSO:              {"the vDSO cannot be put where the image has it: restore does not work", true, "4.9"},
	PidfdGetfd:           {"fds cannot be taken from tasks or handed to the puppet: dump and restore do not work", true, "5.6"},
	Kcmp:                 {"shared open files cannot be told apart from copies: dump does not work", true, "3.5"},
	FdinfoMntID:          {"open files cannot be matched to their mounts", false, "3.15"},
	PagemapScan:          {"memory is found by reading pagemap page by page (slower), and there is no incremental dump without soft-dirty", false, "6.7"},
	SoftDirty:            {"pre-dump and --track-mem use PAGEMAP_SCAN with uffd WP_ASYNC instead", false, ""},
	Userfaultfd:          {"no lazy restore (--lazy-pages) and no uffd-based memory tracking", false, "4.3"},
	UffdWPAsync:          {"no write tracking through PAGEMAP_SCAN: without soft-dirty, no pre-dump or --track-mem", false, "6.7"},
	UffdNonCoop:          {"no lazy restore of trees that fork, mremap or munmap while pages are still missing", false, "4.11"},
	TimeNamespace:        {"tasks in a time namespace cannot be dumped or restored with their clock offsets", false, "5.6"},
	MembarrierQuery:      {"membarrier registrations (MEMBARRIER_CMD_GET_REGISTRATIONS, Linux 6.3) are not dumped: a restored process that registered gets EPERM from expedited barriers", false, "6.3"},
}
