package e2e

import (
	"errors"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestSharedAnonMemory: shared anonymous memory is dumped from its object,
// once, and every mapping of it maps that object again (shmem.c). Pages a
// child wrote before it exited, which no pagemap of the tree shows, come
// back; two children that share a region their parent unmapped still
// share it; a second mapping of part of a region (mremap) is still that
// part.
func TestSharedAnonMemory(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "shmem")
	v.WaitReady(t)
	tree := testutil.MustTree(t, v.Pid)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	testutil.CheckImages(t, dir)
	// The 8 MiB the exited child wrote are in the object's image, not in
	// any process's.
	if n := shmemPages(t, dir); n < 8<<20/mem.PageSize {
		t.Errorf("pagemap-shmem images hold %d pages, want at least the 2048 of A", n)
	}
	restoreTree(t, dir, v, tree)
	v.TermAndCheck(t)
}

// TestSysVSharedMemory: a System V segment attached by a process and its
// two children is attached again at its addresses (criu's
// VMA_AREA_SYSVIPC), in the same segment: a write by one child is read by
// the other and by the parent, and the segment counts the attachments.
// The segment lives in the kernel: once it is gone, the restore fails
// clearly and leaves nothing.
func TestSysVSharedMemory(t *testing.T) {
	v, shmid, tree, dir := dumpSysvVictim(t)
	testutil.CheckImages(t, dir)
	if !hasSysvVMA(t, dir, v.Pid, shmid) {
		t.Errorf("mm-%d.img has no VMA_AREA_SYSVIPC vma of segment %d", v.Pid, shmid)
	}
	restoreTree(t, dir, v, tree)
	v.TermAndCheck(t)
}

func TestSysVSharedMemoryGone(t *testing.T) {
	t.Parallel()
	_, shmid, tree, dir := dumpSysvVictim(t)
	if _, err := unix.SysvShmCtl(shmid, unix.IPC_RMID, nil); err != nil {
		t.Fatalf("remove segment %d: %v", shmid, err)
	}
	msg := testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, "System V shared memory segment "+strconv.Itoa(shmid), "restore on the host that has it")
	assertTreeGone(t, tree)
}

// dumpSysvVictim dumps the shmem victim with its System V segment and
// returns it, the segment's id, its tree and the images.
func dumpSysvVictim(t *testing.T) (*testutil.Victim, int, []testutil.Task, string) {
	t.Helper()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "shmem", "sysv")
	v.WaitReady(t)
	shmid := victimShmid(t, v)
	tree := testutil.MustTree(t, v.Pid)
	dir := t.TempDir()
	dumpTree(t, v, tree, dir)
	return v, shmid, tree, dir
}

// TestSysVSharedMemoryRemoved: a segment marked IPC_RMID goes with its
// last process: the dump refuses, naming it, and the tree runs on.
func TestSysVSharedMemoryRemoved(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, "shmem", "rmid")
	v.WaitReady(t)
	shmid := victimShmid(t, v)
	msg := testutil.DumpFail(t, v.Pid, t.TempDir())
	testutil.AssertContains(t, msg, "System V shared memory segment "+strconv.Itoa(shmid), "marked for removal")
	testutil.AssertRunning(t, v.Pid)
	v.TermAndCheck(t)
}

var shmidLine = regexp.MustCompile(`shmid (\d+)`)

func victimShmid(t *testing.T, v *testutil.Victim) int {
	t.Helper()
	m := shmidLine.FindStringSubmatch(v.LogTail())
	if m == nil {
		t.Fatalf("the victim did not say its shmid:\n%s", v.LogTail())
	}
	id, _ := strconv.Atoi(m[1])
	return id
}

// shmemPages counts the pages of every pagemap-shmem image of dir.
func shmemPages(t *testing.T, dir string) uint64 {
	t.Helper()
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	names, err := filepath.Glob(filepath.Join(dir, "pagemap-shmem-*.img"))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, name := range names {
		r, err := d.NewReader(filepath.Base(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Next(&pagemap.PagemapHead{}); err != nil {
			t.Fatal(err)
		}
		for {
			pe := &pagemap.PagemapEntry{}
			if err := r.Next(pe); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			n += mem.NrPages(pe)
		}
		r.Close()
	}
	return n
}

func hasSysvVMA(t *testing.T, dir string, pid, shmid int) bool {
	t.Helper()
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := &mm.MmEntry{}
	if err := d.ReadOne("mm-"+strconv.Itoa(pid)+".img", m); err != nil {
		t.Fatal(err)
	}
	for _, e := range m.GetVmas() {
		if e.GetStatus()&mem.AreaSysVIPC != 0 && e.GetShmid() == uint64(shmid) {
			return true
		}
	}
	return false
}
