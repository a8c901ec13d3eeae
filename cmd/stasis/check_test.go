package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/stasis-cr/stasis/internal/kerndat"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

func runCheck(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRoot(nil)
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append([]string{"check"}, args...))
	err = root.Execute()
	return out.String(), errb.String(), err
}

func exitCode(err error) int {
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestCheck(t *testing.T) {
	require.RootFor(t, "without CAP_CHECKPOINT_RESTORE check fails by design")
	for _, args := range [][]string{nil, {"--all"}, {"--extra", "--experimental"}} {
		out, stderr, err := runCheck(t, args...)
		if err != nil || stderr != "" {
			t.Fatalf("check %v: %v, stderr %q\n%s", args, err, stderr, out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		fs := kerndat.Probe()
		if len(lines) != len(fs)+1 || lines[len(lines)-1] != "Looks good." {
			t.Fatalf("check %v:\n%s", args, out)
		}
		for i, f := range fs {
			fields := strings.Fields(lines[i])
			wantStatus := "ok"
			if !f.OK {
				wantStatus = "no"
			}
			if fields[0] != wantStatus || !strings.Contains(lines[i], f.Name+"  ") || !strings.Contains(lines[i], f.Detail) {
				t.Errorf("line %q for %+v", lines[i], f)
			}
		}
	}
	out, _, _ := runCheck(t)
	if !strings.Contains(out, "ok      clone3 set_tid") || !strings.Contains(out, "EEXIST on a used pid") {
		t.Errorf("no clone3 line:\n%s", out)
	}
}

func TestCheckFeature(t *testing.T) {
	require.RootFor(t, "the probes measure what a root stasis can do")
	for _, name := range []string{"clone3_set_tid", "can_map_vdso", "mnt_id", "timerfd", kerndat.Clone3SetTID} {
		out, _, err := runCheck(t, "--feature", name)
		if err != nil || out != name+" is supported\n" {
			t.Errorf("--feature %s: %q, %v", name, out, err)
		}
	}
	// Absent on the 6.18 VM; wherever it is present, CAP_SYS_RESOURCE
	// usually is not.
	for _, name := range []string{kerndat.SoftDirty, kerndat.CapSysResource} {
		f, _ := kerndat.Lookup(name)
		if f.OK {
			continue
		}
		out, stderr, err := runCheck(t, "--feature", name)
		if exitCode(err) != 1 || out != "" || !strings.HasPrefix(stderr, name+" is not supported: ") || !strings.Contains(stderr, f.Impact) {
			t.Errorf("--feature %s: %q %q, %v", name, out, stderr, err)
		}
	}
	// What stasis cannot do yet is not supported, whatever the kernel.
	for _, name := range []string{"pidfd_store"} {
		out, stderr, err := runCheck(t, "--feature", name)
		if exitCode(err) != 1 || out != "" || !strings.HasPrefix(stderr, name+" is not supported: stasis ") {
			t.Errorf("--feature %s: %q %q, %v", name, out, stderr, err)
		}
	}
	out, stderr, err := runCheck(t, "--feature", "no_such_feature")
	if exitCode(err) != 1 || out != "" || stderr != "Unknown feature no_such_feature\n" {
		t.Errorf("unknown feature: %q %q %v", out, stderr, err)
	}
	out, _, err = runCheck(t, "--feature", "list")
	if err != nil || !strings.Contains(out, "mem_dirty_track, ") || !strings.Contains(out, kerndat.PtraceSeize) {
		t.Errorf("list: %q %v", out, err)
	}
}

func TestPrintCheck(t *testing.T) {
	fs := []kerndat.Feature{
		{Name: "a", OK: true, Detail: "fine", Impact: "x", Required: true},
		{Name: "longer name", OK: false, Detail: "absent", Impact: "optional thing breaks"},
	}
	var b bytes.Buffer
	if !printCheck(&b, fs) {
		t.Error("optional miss made it fail")
	}
	want := "ok      a            fine\n" +
		"no      longer name  absent -> optional thing breaks\n" +
		"Looks good.\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	fs[0].OK = false
	b.Reset()
	if printCheck(&b, fs) {
		t.Error("required miss passed")
	}
	if !strings.HasPrefix(b.String(), "MISSING a            fine -> x\n") || !strings.HasSuffix(b.String(), "Does not look good.\n") {
		t.Errorf("got\n%s", b.String())
	}
}
