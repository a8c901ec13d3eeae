package stasis

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/stasis-cr/stasis/internal/dump"
	"github.com/stasis-cr/stasis/internal/kerndat"
	"github.com/stasis-cr/stasis/internal/restore"
	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// TestNeedsAreRequired keeps `stasis check` honest: a feature is marked
// required (MISSING when absent) exactly when dump or restore Require it,
// or, for CAP_CHECKPOINT_RESTORE, when the privilege check does.
func TestNeedsAreRequired(t *testing.T) {
	needed := map[string]bool{kerndat.CapCheckpointRestore: true}
	for _, n := range append(slices.Clone(dump.Needs), restore.Needs...) {
		needed[n] = true
	}
	for _, f := range Check() {
		if f.Required != needed[f.Name] {
			t.Errorf("%s: required %v, but needed by dump or restore: %v", f.Name, f.Required, needed[f.Name])
		}
		delete(needed, f.Name)
	}
	for n := range needed {
		t.Errorf("%s is needed but not a feature Check reports", n)
	}
}

// TestMissingFeature: on a kernel without clone3's set_tid (faked), a
// restore stops before anything, saying what it needs and since which
// kernel, with an error that matches ErrNotSupported; a dump of the same
// kernel is not refused for it.
func TestMissingFeature(t *testing.T) {
	require.RootFor(t, "the privilege check before the features wants root or CAP_CHECKPOINT_RESTORE")
	var fs []Feature
	for _, f := range Check() {
		f.OK = f.Name != kerndat.Clone3SetTID
		if !f.OK {
			f.Detail = "clone3 without set_tid (E2BIG)"
		}
		fs = append(fs, f)
	}
	defer kerndat.Fake(fs)()

	_, err := Restore(RestoreOptions{ImagesDir: t.TempDir()})
	want := "restore: needs clone3 set_tid (kernel 5.5+): clone3 without set_tid (E2BIG); "
	if !errors.Is(err, ErrNotSupported) || err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("restore on a kernel without set_tid: %v, want %q... wrapping ErrNotSupported", err, want)
	}
	// A pid that cannot exist: the dump gets past the features and fails
	// on the pid.
	err = Dump(DumpOptions{Pid: 1 << 30, ImagesDir: t.TempDir()})
	if err == nil || strings.Contains(err.Error(), "needs ") {
		t.Errorf("dump on a kernel without set_tid: %v, want the error about the pid", err)
	}
	if ok, detail, known := CheckFeature("clone3_set_tid"); ok || !known || !strings.Contains(detail, "E2BIG") {
		t.Errorf("CheckFeature(clone3_set_tid) = %v, %q, %v", ok, detail, known)
	}
}
