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
	Required bool   // stasis check fails without it
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

// group is a set of features measured together, at most once.
type group struct {
	names []string
	run   func() []Feature
	once  sync.Once
	res   []Feature
}

func (g *group) get() []Feature {
	g.once.Do(func() {
		g.res = g.run()
		if len(g.res) != len(g.names) {
			panic(fmt.Sprintf("kerndat: probe for %v returned %d features", g.names, len(g.res)))
		}
	})
	return g.res
}

var groups = []*group{
	{names: []string{CheckpointRestore}, run: probeMapFiles},
	{names: []string{CapCheckpointRestore, CapSysResource}, run: probeCaps},
	{names: []string{PtraceSeize, PtraceXstate, PtraceRseq, PtraceSuspendSeccomp, PtraceSeccompFilter}, run: probePtrace},
	{names: []string{Clone3SetTID}, run: probeClone3},
	{names: []string{PidMax}, run: probePidMax},
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

// Probe runs every probe (once per process) and returns the results in a
// fixed order.
func Probe() []Feature {
	var out []Feature
	for _, g := range groups {
		out = append(out, g.get()...)
	}
	return out
}

// Lookup returns the result for one feature, probing its group if needed.
func Lookup(name string) (Feature, bool) {
	for _, g := range groups {
		for i, n := range g.names {
			if n == name {
				return g.get()[i], true
			}
		}
	}
	return Feature{}, false
}

// Require returns nil if the named feature is present, and otherwise an
// error wrapping ErrNotSupported that names the feature, what was found and
// what does not work without it.
func Require(name string) error {
	f, ok := Lookup(name)
	if !ok {
		return fmt.Errorf("kernel feature %q: unknown to kerndat: %w", name, ErrNotSupported)
	}
	if f.OK {
		return nil
	}
	return fmt.Errorf("kernel feature %s (%s; %s): %w", f.Name, f.Detail, f.Impact, ErrNotSupported)
}

func ok(name, detail string) Feature { return Feature{Name: name, OK: true, Detail: detail} }

func missing(name, format string, args ...any) Feature {
	return Feature{Name: name, Detail: fmt.Sprintf(format, args...)}
}

// withInfo fills in Impact and Required from the table below.
func withInfo(fs ...Feature) []Feature {
	for i := range fs {
		in := info[fs[i].Name]
		fs[i].Impact, fs[i].Required = in.impact, in.required
	}
	return fs
}

var info = map[string]struct {
	impact   string
	required bool
}{
	CheckpointRestore:    {"no /proc/PID/map_files, PR_SET_MM_MAP, set_tid or kcmp: dump and restore do not work", true},
	CapCheckpointRestore: {"clone3 set_tid, exe_fd of PR_SET_MM_MAP and map_files need it (or CAP_SYS_ADMIN): dump and restore do not work", true},
	CapSysResource:       {"only PR_SET_MM_MAP works, not the single PR_SET_MM_* fields; F_SETPIPE_SZ is capped at fs.pipe-max-size; rlimits cannot be raised above the hard limit", false},
	PtraceSeize:          {"tasks cannot be frozen: dump does not work", true},
	PtraceXstate:         {"FPU/SSE/AVX state cannot be saved or restored: dump does not work", true},
	PtraceRseq:           {"rseq registrations are lost: sched_getcpu() freezes and rseq critical sections break after restore", false},
	PtraceSuspendSeccomp: {"tasks with a seccomp filter cannot be dumped: injected syscalls would be filtered", false},
	PtraceSeccompFilter:  {"seccomp filters cannot be saved: tasks with filters (containers) cannot be dumped", false},
	Clone3SetTID:         {"tasks cannot be created with their original PIDs: restore does not work", true},
	PidMax:               {"dumped PIDs at or above pid_max cannot be restored", false},
	SetMMMap:             {"brk, arg/env, auxv and exe link cannot be restored: restore does not work", true},
	MapVDSO:              {"restore must move the vDSO with mremap, which needs the dumped vvar/vdso layout to match this kernel's", false},
	PidfdGetfd:           {"fds cannot be taken from tasks or handed to the puppet: dump and restore do not work", true},
	Kcmp:                 {"shared open files cannot be told apart from copies: dump does not work", true},
	FdinfoMntID:          {"open files cannot be matched to their mounts", false},
	PagemapScan:          {"memory is found by reading pagemap page by page (slower), and there is no incremental dump without soft-dirty", false},
	SoftDirty:            {"pre-dump and --track-mem must use PAGEMAP_SCAN with uffd WP_ASYNC instead", false},
	Userfaultfd:          {"no lazy restore (--lazy-pages) and no uffd-based memory tracking", false},
	UffdWPAsync:          {"no write tracking through PAGEMAP_SCAN: without soft-dirty, no pre-dump or --track-mem", false},
	UffdNonCoop:          {"no lazy restore of trees that fork, mremap or munmap while pages are still missing", false},
	TimeNamespace:        {"tasks in a time namespace cannot be dumped or restored with their clock offsets", false},
	MembarrierQuery:      {"membarrier registrations (MEMBARRIER_CMD_GET_REGISTRATIONS, Linux 6.3) are not dumped: a restored process that registered gets EPERM from expedited barriers", false},
}
