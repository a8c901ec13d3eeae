package files

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/memfd"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mem"
)

// memfdRoundTrip dumps fd of this process into a new image dir and returns
// a Restorer of it and the fd's file id.
func memfdRoundTrip(t *testing.T, fd int) (*Restorer, uint32) {
	t.Helper()
	tab := NewTable(DumpOptions{}, func() int { return 1 })
	e, err := tab.dumpFd(os.Getpid(), fd)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.WriteImages(dir); err != nil {
		t.Fatal(err)
	}
	fes, err := images.ReadAll(dir, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	ins, err := images.ReadAll(dir, "memfd.img", func() *memfd.MemfdInodeEntry { return &memfd.MemfdInodeEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	files, inodes := map[uint32]*fdinfo.FileEntry{}, map[uint32]*memfd.MemfdInodeEntry{}
	for _, f := range fes {
		files[f.GetId()] = f
	}
	for _, in := range ins {
		inodes[uint32(in.GetInodeId())] = in
	}
	r := NewRestorer(RestoreOptions{}, dir, files, inodes)
	t.Cleanup(func() { r.Close() })
	return r, e.GetId()
}

func newMemfd(t *testing.T, name string, seals int) int {
	t.Helper()
	fd, err := unix.MemfdCreate(name, unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, 16*mem.PageSize); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(fd, []byte("head"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(fd, []byte("tail"), 10*mem.PageSize+7); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Seek(fd, 333, 0); err != nil {
		t.Fatal(err)
	}
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

// TestMemfdRoundTrip: a memfd fd comes back with its name, size, content,
// holes and offset, and its seals only once Finish runs.
func TestMemfdRoundTrip(t *testing.T) {
	const seals = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SEAL
	fd := newMemfd(t, "unit memfd", seals)
	r, id := memfdRoundTrip(t, fd)
	f, err := r.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	link, _ := os.Readlink("/proc/self/fd/" + itoa(int(f.Fd())))
	if link != "/memfd:unit memfd (deleted)" {
		t.Errorf("link %q", link)
	}
	if pos, _ := unix.Seek(int(f.Fd()), 0, 1); pos != 333 {
		t.Errorf("offset %d, want 333", pos)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Size != 16*mem.PageSize {
		t.Errorf("size %d (%v), want %d", st.Size, err, 16*mem.PageSize)
	}
	buf := make([]byte, 4)
	if _, err := unix.Pread(int(f.Fd()), buf, 10*mem.PageSize+7); err != nil || string(buf) != "tail" {
		t.Errorf("content at %d: %q %v", 10*mem.PageSize+7, buf, err)
	}
	if h, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE); err != nil || h != mem.PageSize {
		t.Errorf("first hole at %d (%v), want %d", h, err, mem.PageSize)
	}
	if s, _ := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); s != 0 {
		t.Errorf("seals %#x before Finish: the tasks could not map it writable", s)
	}
	if err := r.Finish(); err != nil {
		t.Fatal(err)
	}
	if s, _ := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0); s != seals {
		t.Errorf("seals %#x after Finish, want %#x", s, seals)
	}
}

// TestMemfdSealBusy: a write seal that cannot be added (a writable shared
// mapping exists, which a good image never asks for) fails Finish with an
// error naming the memfd and the cause.
func TestMemfdSealBusy(t *testing.T) {
	fd := newMemfd(t, "busy", unix.F_SEAL_WRITE)
	r, id := memfdRoundTrip(t, fd)
	f, err := r.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	// The image's fd is read-write: a writable mapping of it is possible.
	m, err := unix.Mmap(int(f.Fd()), 0, mem.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	err = r.Finish()
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), `memfd "busy"`) || !strings.Contains(err.Error(), "writable shared mapping") {
		t.Errorf("Finish: %v, want EBUSY naming memfd \"busy\"", err)
	}
}

// TestMemfdBadInode: an entry naming an inode memfd.img lacks is refused.
func TestMemfdBadInode(t *testing.T) {
	fe := memfdEntry(7, 99, unix.O_RDWR, 0)
	r := NewRestorer(RestoreOptions{}, nil, map[uint32]*fdinfo.FileEntry{7: fe}, map[uint32]*memfd.MemfdInodeEntry{})
	if _, err := r.Open(7); !errors.Is(err, images.ErrCorrupt) {
		t.Errorf("Open: %v, want ErrCorrupt", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
