package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// assertPrivate fails unless every file in dir is readable by its owner
// only: images hold the tree's memory, so no one else may read them.
func assertPrivate(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) < 5 {
		t.Fatalf("%s holds only %d files: not a dump", dir, len(ents))
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want no access for group and others", e.Name(), fi.Mode().Perm())
		}
	}
}

func dirMode(t *testing.T, dir string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestImagePermissions: a dump into a directory stasis creates makes it
// 0700 and every file in it (images, pages, stasis-checksums.json,
// stats-dump, the -o log, then the restore's stats and log) 0600; a
// directory that exists keeps its mode, its files are still 0600. The
// victim comes back from the private images intact.
func TestImagePermissions(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "counter", filepath.Join(t.TempDir(), "status"))
	v.WaitReady(t)

	// A directory stasis creates, two levels deep, the log written into it.
	fresh := filepath.Join(t.TempDir(), "new", "imgs")
	r := testutil.Run(t, 25*time.Second, "dump", "-t", strconv.Itoa(v.Pid), "-D", fresh, "-R", "-v4", "-o", "dump.log")
	if r.Code != 0 {
		t.Fatalf("dump -R failed\n%s", r)
	}
	if m := dirMode(t, fresh); m != 0o700 {
		t.Errorf("images dir created with mode %v, want 0700", m)
	}
	for _, name := range []string{"dump.log", "stats-dump", "stasis-checksums.json", "pages-1.img", "inventory.img"} {
		if _, err := os.Stat(filepath.Join(fresh, name)); err != nil {
			t.Errorf("expected %s in the dump: %v", name, err)
		}
	}
	assertPrivate(t, fresh)

	// An existing directory keeps its mode.
	shared := t.TempDir()
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}
	r = testutil.Run(t, 25*time.Second, "dump", "-t", strconv.Itoa(v.Pid), "-D", shared, "-v4", "-o", "dump.log")
	if r.Code != 0 {
		t.Fatalf("dump failed\n%s", r)
	}
	v.Reap(t)
	if m := dirMode(t, shared); m != 0o755 {
		t.Errorf("existing images dir changed to mode %v, want 0755 kept", m)
	}
	assertPrivate(t, shared)

	// The restore's own files (stats-restore, its -o log) are private too.
	// (the later -o wins: the log goes to the images dir).
	testutil.RestoreDetached(t, shared, v, "-o", "restore.log")
	for _, name := range []string{"restore.log", "stats-restore"} {
		if _, err := os.Stat(filepath.Join(shared, name)); err != nil {
			t.Errorf("expected %s after the restore: %v", name, err)
		}
	}
	assertPrivate(t, shared)
	v.TermAndCheck(t)
}
