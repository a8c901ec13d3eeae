package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// Unlinked FIFOs, directories and device nodes (ghostnode.c): they travel
// as ghost-file-N.img entries without content, made again at restore
// (mknod, mkdir) and removed once the tasks hold them.

// noNodesLeft fails if the restore left anything in work, which the
// victim emptied before the dump.
func noNodesLeft(t *testing.T, work string) {
	t.Helper()
	ents, _ := os.ReadDir(work)
	for _, e := range ents {
		if e.Name() != "ready" {
			t.Errorf("%s left behind in %s", e.Name(), work)
		}
	}
}

// TestGhostNodes: an unlinked FIFO with 3000 bytes buffered and 3 fds
// (one ghost, data back byte for byte), a removed directory open as an fd,
// a cwd in a removed directory whose parent is gone too, unlinked
// /dev/null and /dev/zero nodes, and a deleted /dev/shm file open and
// mapped come back unlinked, with their mode, owner and data.
func TestGhostNodes(t *testing.T) {
	testutil.RequireRoot(t)
	work := t.TempDir()
	v := testutil.StartVictim(t, "ghostnode", work)
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	if n, _ := imagesSize(t, dir, "ghost-file-*.img"); n != 6 {
		t.Errorf("%d ghost images, want 6 (fifo, dir, cwd, null, zero, shm)", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "remap-fpath.img")); err != nil {
		t.Error(err)
	}
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	noNodesLeft(t, work)
	v.TermAndCheck(t)
}
