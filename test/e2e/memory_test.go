package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestMemory: 256 MiB of patterned anonymous memory, a sparse region whose
// untouched pages must stay zero, read-only and PROT_NONE data, heap (brk and
// mmap'ed malloc blocks), the stack, .data and .bss all come back, a locked
// region stays locked and THP stays disabled; the victim regenerates every
// pattern after the restore (mem.c).
func TestMemory(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "mem", "256")
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.CheckImages(t, dir)

	// Every present page, and only those: 256 MiB + 4 MiB of sparse pages +
	// 8 MiB of heap at least; the 60 MiB never touched must not be dumped.
	var pages int64
	files, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	for _, f := range files {
		if st, err := os.Stat(f); err == nil {
			pages += st.Size()
		}
	}
	t.Logf("pages images: %d MiB in %d file(s)", pages>>20, len(files))
	if pages < 268<<20 || pages > 300<<20 {
		t.Errorf("pages images hold %d MiB, want 268..300 MiB", pages>>20)
	}

	testutil.Restore(t, dir, v)
	v.TermAndCheck(t)
}

// procSnapshot is what a restore must reproduce exactly, as /proc shows it.
type procSnapshot struct {
	maps   []testutil.MapsLine
	fields map[string]string
}

func snapshot(t *testing.T, pid int) procSnapshot {
	t.Helper()
	maps, err := testutil.Maps(pid)
	if err != nil {
		t.Fatal(err)
	}
	s := procSnapshot{maps: maps, fields: map[string]string{}}
	for _, name := range []string{"comm", "cmdline", "environ", "auxv"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
		if err != nil {
			t.Fatal(err)
		}
		s.fields[name] = fmt.Sprintf("%q", b)
	}
	for _, name := range []string{"exe", "cwd"} {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, name))
		if err != nil {
			t.Fatal(err)
		}
		s.fields[name] = l
	}
	// The mm fields that PR_SET_MM_MAP restores.
	names := map[int]string{26: "startcode", 27: "endcode", 28: "startstack", 45: "start_data",
		46: "end_data", 47: "start_brk", 48: "arg_start", 49: "arg_end", 50: "env_start", 51: "env_end"}
	for n, name := range names {
		f, err := testutil.StatField(pid, n)
		if err != nil {
			t.Fatal(err)
		}
		s.fields["stat "+name] = f
	}
	st, err := testutil.Status(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"SigBlk", "SigIgn", "SigCgt", "Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp"} {
		s.fields["status "+k] = st[k]
	}
	return s
}

// TestMapsUnchanged: the restored task's /proc/PID/maps is the dumped one,
// line for line (range, permissions, offset, inode, path), and so are its
// comm, cmdline, environ, auxv, exe, cwd, mm layout fields and signal masks.
func TestMapsUnchanged(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "counter", filepath.Join(t.TempDir(), "count"))
	v.WaitReady(t)
	before := snapshot(t, v.Pid)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	testutil.RestoreDetached(t, dir, v)
	after := snapshot(t, v.Pid)

	if !slices.Equal(before.maps, after.maps) {
		t.Errorf("/proc/%d/maps differs after restore:\n%s", v.Pid, mapsDiff(before.maps, after.maps))
	}
	for k, b := range before.fields {
		if a := after.fields[k]; a != b {
			t.Errorf("%s differs after restore:\n  dumped:   %s\n  restored: %s", k, b, a)
		}
	}
	v.TermAndCheck(t)
}

// mapsDiff lists the lines only in one of the two maps.
func mapsDiff(a, b []testutil.MapsLine) string {
	var out []string
	for _, l := range a {
		if !slices.Contains(b, l) {
			out = append(out, "- "+l.String())
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			out = append(out, "+ "+l.String())
		}
	}
	if len(out) == 0 {
		out = append(out, "(same lines, different order)")
	}
	return strings.Join(out, "\n")
}
