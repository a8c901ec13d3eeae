package kerndat

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

func requireRoot(t *testing.T) {
	t.Helper()
	require.RootFor(t, "the probes measure what a root stasis can do")
}

func TestProbeTable(t *testing.T) {
	seen := map[string]bool{}
	for _, g := range groups {
		for _, n := range g.names {
			if seen[n] {
				t.Errorf("feature %q listed twice", n)
			}
			seen[n] = true
			if info[n].impact == "" {
				t.Errorf("feature %q has no impact text", n)
			}
		}
	}
	if len(info) != len(seen) {
		t.Errorf("info has %d entries for %d features", len(info), len(seen))
	}
	fs := Probe()
	if len(fs) != len(seen) {
		t.Fatalf("Probe returned %d features, want %d", len(fs), len(seen))
	}
	for _, f := range fs {
		if f.Detail == "" || f.Impact == "" || f.Impact != info[f.Name].impact || f.Required != info[f.Name].required {
			t.Errorf("%+v", f)
		}
	}
}

// TestProbeThisKernel pins what the development VM and CI machines (6.18,
// root, no CAP_SYS_RESOURCE, no soft-dirty) offer: every required feature
// must be found there, so a probe that breaks shows up here.
func TestProbeThisKernel(t *testing.T) {
	requireRoot(t)
	for _, f := range Probe() {
		t.Logf("%-5v %-26s %s", f.OK, f.Name, f.Detail)
		if f.Required && !f.OK {
			t.Errorf("required %s missing: %s", f.Name, f.Detail)
		}
	}
	var uname unix.Utsname
	unix.Uname(&uname)
	if !strings.HasPrefix(unix.ByteSliceToString(uname.Release[:]), "6.18") {
		require.SkipOrFail(t, "the expectations below are for the 6.18 kernel of the CI machines, this is %s", unix.ByteSliceToString(uname.Release[:]))
	}
	for name, want := range map[string]bool{
		PtraceRseq: true, PtraceSuspendSeccomp: true, PtraceSeccompFilter: true, MapVDSO: true,
		FdinfoMntID: true, PagemapScan: true, SoftDirty: false, Userfaultfd: true, UffdWPAsync: true,
		UffdNonCoop: true, TimeNamespace: true, PidMax: true, MembarrierQuery: true,
	} {
		if f, _ := Lookup(name); f.OK != want {
			t.Errorf("%s: OK=%v, want %v (%s)", name, f.OK, want, f.Detail)
		}
	}
	if f, _ := Lookup(Clone3SetTID); f.Detail != "EEXIST on a used pid" {
		t.Errorf("clone3: %s", f.Detail)
	}
	if f, _ := Lookup(PtraceXstate); !strings.HasPrefix(f.Detail, "2432 bytes") {
		t.Logf("xstate size differs from the 2432 bytes measured on the AMD EPYC VM: %s", f.Detail)
	}
}

func TestProbeCached(t *testing.T) {
	a := Probe()
	t0 := time.Now()
	b := Probe()
	if d := time.Since(t0); d > 10*time.Millisecond {
		t.Errorf("second Probe took %v", d)
	}
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("%v != %v", a[i], b[i])
		}
	}
}

// TestProbesLeaveNoTrace: no child (the ptrace tracee, a clone3 that
// should never happen) is left, and no thread of ours creates children in
// the time namespace the probe made.
func TestProbesLeaveNoTrace(t *testing.T) {
	Probe()
	var ws unix.WaitStatus
	if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil); err != unix.ECHILD {
		t.Errorf("wait4 after the probes: pid %d, %v: a child is left", pid, err)
	}
	own, err := os.Readlink("/proc/self/ns/time")
	if err != nil {
		require.SkipOrFail(t, "no time namespace link: %v", err)
	}
	tasks, err := proc.Tasks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range tasks {
		p := filepath.Join("/proc/self/task", strconv.Itoa(tid), "ns/time_for_children")
		if l, err := os.Readlink(p); err == nil && l != own {
			t.Errorf("thread %d (pid %d): time_for_children %s, want %s", tid, os.Getpid(), l, own)
		}
	}
}

func TestRequire(t *testing.T) {
	requireRoot(t)
	if err := Require(Clone3SetTID); err != nil {
		t.Errorf("Require(clone3): %v", err)
	}
	err := Require("no such feature")
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "no such feature") {
		t.Errorf("unknown feature: %v", err)
	}
	// soft-dirty is absent on the 6.18 VM; elsewhere pick any missing one.
	for _, f := range Probe() {
		if f.OK {
			continue
		}
		err := Require(f.Name)
		if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), f.Name) || !strings.Contains(err.Error(), f.Impact) {
			t.Errorf("Require(%s) = %v", f.Name, err)
		}
		return
	}
}

func TestVDSOLayout(t *testing.T) {
	const p = 4096
	vma := func(start, pages uint64, path string) proc.VMA {
		return proc.VMA{Start: start, End: start + pages*p, Path: path, Read: true}
	}
	l, err := vdsoLayout([]proc.VMA{vma(0x1000, 1, "/x"), vma(0x10000, 4, "[vvar]"), vma(0x14000, 2, "[vvar_vclock]"), vma(0x16000, 2, "[vdso]"), vma(0x20000, 1, "[stack]")}, p)
	if err != nil || l != (VDSOLayout{VvarPages: 4, VvarVclockPages: 2, VdsoPages: 2, VdsoStart: 0x16000, VvarStart: 0x10000, VdsoOffset: 0x6000}) {
		t.Errorf("6.18 layout: %+v %v", l, err)
	}
	l, err = vdsoLayout([]proc.VMA{vma(0x10000, 4, "[vvar]"), vma(0x14000, 2, "[vdso]")}, p)
	if err != nil || l.VvarVclockPages != 0 || l.VdsoOffset != 0x4000 {
		t.Errorf("pre-6.13 layout: %+v %v", l, err)
	}
	for name, vmas := range map[string][]proc.VMA{
		"no vdso":    {vma(0x10000, 4, "[vvar]")},
		"no vvar":    {vma(0x16000, 2, "[vdso]")},
		"gap":        {vma(0x10000, 4, "[vvar]"), vma(0x15000, 2, "[vdso]")},
		"vdso first": {vma(0x16000, 2, "[vdso]"), vma(0x18000, 4, "[vvar]")},
		"file named [vdso]": {vma(0x10000, 4, "[vvar]"), func() proc.VMA {
			v := vma(0x14000, 2, "[vdso]")
			v.Inode = 7
			return v
		}()},
	} {
		if _, err := vdsoLayout(vmas, p); !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestHostVDSO(t *testing.T) {
	l, err := HostVDSO()
	if err != nil {
		t.Fatal(err)
	}
	page := uint64(os.Getpagesize())
	if l.VdsoOffset != uint64(l.VvarPages+l.VvarVclockPages)*page || l.VdsoPages == 0 || l.VdsoStart-l.VvarStart != l.VdsoOffset {
		t.Errorf("%+v", l)
	}
	t.Logf("%s", l)
}

func TestCRIUFeatures(t *testing.T) {
	requireRoot(t)
	names := CRIUFeatureNames()
	if len(names) == 0 {
		t.Fatal("no names")
	}
	for _, n := range names {
		ok, detail, known := CRIUFeature(n)
		if !known || detail == "" {
			t.Errorf("%s: known %v, detail %q", n, known, detail)
		}
		t.Logf("%-16s %v  %s", n, ok, detail)
	}
	if _, _, known := CRIUFeature("no_such_feature"); known {
		t.Error("no_such_feature should be unknown")
	}
	// stasis tracks memory with PAGEMAP_SCAN and WP_ASYNC or soft-dirty:
	// mem_dirty_track says so exactly when one of them is there.
	scan, _ := Lookup(PagemapScan)
	wp, _ := Lookup(UffdWPAsync)
	sd, _ := Lookup(SoftDirty)
	if ok, _, _ := CRIUFeature("mem_dirty_track"); ok != (scan.OK && wp.OK || sd.OK) {
		t.Errorf("mem_dirty_track = %v, but PAGEMAP_SCAN %v, WP_ASYNC %v, soft-dirty %v", ok, scan.OK, wp.OK, sd.OK)
	}
	known := map[string]bool{}
	for _, n := range names {
		known[n] = true
	}
	for _, n := range criu42Features {
		if !known[n] {
			t.Errorf("criu 4.2 feature %s is not answered", n)
		}
	}
	if len(names) != len(criu42Features) {
		t.Errorf("%d names answered, criu 4.2 has %d", len(names), len(criu42Features))
	}
}

// criu42Features are the names of `criu check --help` in criu 4.2.
var criu42Features = strings.Fields(`mnt_id mem_dirty_track aio_remap timerfd tun
	tun_ns userns fdinfo_lock seccomp_suspend seccomp_filters loginuid cgroupns autofs
	tcp_half_closed compat_cr uffd uffd-noncoop can_map_vdso sk_ns sk_unix_file net_diag_raw
	nsid link_nsid kcmp_epoll timens external_net_ns clone3_set_tid newifindex nftables
	has_ipt_legacy pidfd_store ns_pid apparmor_stacking network_lock_nftables sockopt_buf_lock
	memfd_hugetlb move_mount_set_group openat2 get_rseq_conf ipv6_freebind pagemap_scan
	timer_cr_ids overlayfs_maps breakpoints pagemap_scan_guard_pages`)

func TestThrowawayThread(t *testing.T) {
	for i := 0; i < 200; i++ {
		var tid int
		got := onThrowawayThread(func() { tid = unix.Gettid() })
		if tid == os.Getpid() || got != tid {
			t.Fatalf("fn ran on thread %d (pid %d), reported %d", tid, os.Getpid(), got)
		}
	}
}

// TestProbesRepeat runs the probes that fork or trace again, uncached: they
// must give the same answer each time and leave no child behind.
func TestProbesRepeat(t *testing.T) {
	requireRoot(t)
	for i := 0; i < 5; i++ {
		for _, fs := range [][]Feature{probePtrace(), probeClone3(), probeTimeNS(), probeUffd(), probePagemap()} {
			for _, f := range fs {
				if want, _ := Lookup(f.Name); f.OK != want.OK {
					t.Errorf("run %d: %s OK=%v, first run %v (%s)", i, f.Name, f.OK, want.OK, f.Detail)
				}
			}
		}
	}
	var ws unix.WaitStatus
	if pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil); err != unix.ECHILD {
		t.Errorf("wait4: pid %d, %v: a child is left", pid, err)
	}
}

// TestRequireFaked: on a (faked) kernel without clone3's set_tid, Require
// names the feature and the kernel that brought it, what was found and
// what does not work, wrapping ErrNotSupported; the features present pass.
func TestRequireFaked(t *testing.T) {
	undo := Fake([]Feature{
		{Name: Kcmp, OK: true, Detail: "faked"},
		{Name: Clone3SetTID, Detail: "clone3 without set_tid (E2BIG)"},
		{Name: CheckpointRestore, Detail: "faked"},
	})
	defer undo()
	if err := Require(Kcmp); err != nil {
		t.Errorf("Require(kcmp) = %v", err)
	}
	err := Require(Kcmp, Clone3SetTID)
	want := "needs clone3 set_tid (kernel 5.5+): clone3 without set_tid (E2BIG); tasks cannot be created with their original PIDs: restore does not work: not supported"
	if !errors.Is(err, ErrNotSupported) || err.Error() != want {
		t.Errorf("Require(kcmp, clone3) = %v, want %q", err, want)
	}
	// A config option has no kernel version.
	if err := Require(CheckpointRestore); err == nil || !strings.HasPrefix(err.Error(), "needs CONFIG_CHECKPOINT_RESTORE: faked; ") {
		t.Errorf("Require(CONFIG_CHECKPOINT_RESTORE) = %v", err)
	}
	if fs := Probe(); len(fs) != 3 || fs[1].Since != "5.5" || !fs[1].Required {
		t.Errorf("faked Probe = %+v", fs)
	}
	undo()
	if f, ok := Lookup(Kcmp); !ok || f.Detail == "faked" {
		t.Errorf("after undo: %+v", f)
	}
}
