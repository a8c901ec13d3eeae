package files

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	ghostfile "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestGhostRoundTrip: a sparse file written as a ghost image and made
// again has the same size, data, holes, mode and mtime, and only its data
// is in the image.
func TestGhostRoundTrip(t *testing.T) {
	src := filepath.Join(t.TempDir(), "sparse")
	f, err := os.OpenFile(src, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	const size = 256 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	blocks := map[int64][]byte{0: bytes.Repeat([]byte("a"), 4096), 100 << 20: bytes.Repeat([]byte("b"), 8192), size - 10: []byte("0123456789")}
	for off, b := range blocks {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		t.Fatal(err)
	}
	imgs := t.TempDir()
	dir, err := images.Create(imgs)
	if err != nil {
		t.Fatal(err)
	}
	g := &ghost{id: 0x1a, src: src, name: src, st: st}
	if err := g.write(dir); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(imgs, "ghost-file-1a.img"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 64<<10 {
		t.Errorf("ghost image is %d bytes for 12 KiB of data", fi.Size())
	}
	rdir, err := images.Open(imgs)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRestorer(RestoreOptions{}, rdir, nil, nil)
	os.Remove(src)
	p, _, err := r.createGhost(0x1a, &regfile.RegFileEntry{Name: proto.String(src)})
	if err != nil {
		t.Fatal(err)
	}
	if p != src+".cr.1a.ghost" {
		t.Errorf("ghost made as %s", p)
	}
	var got unix.Stat_t
	if err := unix.Stat(p, &got); err != nil {
		t.Fatal(err)
	}
	// criu keeps times in microseconds.
	if got.Size != size || got.Mode != st.Mode || got.Mtim.Sec != st.Mtim.Sec || got.Mtim.Nsec != st.Mtim.Nsec/1000*1000 {
		t.Errorf("ghost size %d mode %#o mtime %v, want %d %#o %v", got.Size, got.Mode, got.Mtim, size, st.Mode, st.Mtim)
	}
	if got.Blocks*512 > 1<<20 {
		t.Errorf("ghost has %d blocks: its holes were filled", got.Blocks)
	}
	gf, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()
	for off, b := range blocks {
		buf := make([]byte, len(b))
		if _, err := gf.ReadAt(buf, off); err != nil || !bytes.Equal(buf, b) {
			t.Errorf("at %d: %q %v", off, buf[:min(len(buf), 16)], err)
		}
	}
	hole := make([]byte, 4096)
	if _, err := gf.ReadAt(hole, 50<<20); err != nil || !bytes.Equal(hole, make([]byte, 4096)) {
		t.Errorf("hole at 50 MiB: %v", err)
	}
	// A second restore of the same images must not find the first one's file.
	if _, _, err := r.createGhost(0x1a, &regfile.RegFileEntry{Name: proto.String(src)}); err == nil {
		t.Error("a ghost file already there was overwritten")
	}
}

func TestBuildID(t *testing.T) {
	id, err := buildID("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	// 20 bytes, four to a word as criu packs them; the note's bytes in order.
	want, err := exec.Command("sh", "-c", "readelf -n /bin/true | sed -n 's/.*Build ID: //p'").Output()
	if err != nil {
		t.Fatal(err)
	}
	if len(id) != 5 || hexID(id) != strings.TrimSpace(string(want)) {
		t.Errorf("build-id of /bin/true: %v = %s, readelf says %s (want 5 words)", id, hexID(id), want)
	}
	txt := filepath.Join(t.TempDir(), "txt")
	os.WriteFile(txt, []byte("\x7fELF but not really"), 0o600)
	if id, err := buildID(txt); id != nil || err != nil {
		t.Errorf("build-id of a non-ELF file: %v %v", id, err)
	}
}

func TestCheckSize(t *testing.T) {
	for _, c := range []struct {
		flags uint32
		want  bool
	}{
		{unix.O_RDONLY, true}, {unix.O_RDWR | unix.O_APPEND, true},
		{unix.O_WRONLY, true}, {unix.O_WRONLY | unix.O_APPEND, false},
	} {
		if got := checkSize(c.flags); got != c.want {
			t.Errorf("checkSize(%#o) = %v", c.flags, got)
		}
	}
}

// TestGhostNodesRoundTrip: a FIFO, a character device and a directory
// whose parent is gone too are written as ghost entries without content
// and made again (mknod at NAME.cr.ID.ghost, mkdir at NAME with the lost
// parent) with their type, rdev, mode, owner and mtime; a directory whose
// name is taken now is made beside it.
func TestGhostNodesRoundTrip(t *testing.T) {
	testutil.RequireRootFor(t, "mknod of a device node and chown to another user")
	work := t.TempDir()
	imgs := t.TempDir()
	dir, err := images.Create(imgs)
	if err != nil {
		t.Fatal(err)
	}
	mtime := []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}
	nodes := []struct {
		name string
		mode uint32
		rdev int
		want string // where the ghost is made, relative to work
	}{
		{"fifo", unix.S_IFIFO | 0o640, 0, "fifo.cr.1.ghost"},
		{"null", unix.S_IFCHR | 0o620, int(unix.Mkdev(1, 3)), "null.cr.2.ghost"},
		{"gone/dir", unix.S_IFDIR | 0o751, 0, "gone/dir"},
		{"taken", unix.S_IFDIR | 0o700, 0, "taken.cr.4.ghost"},
	}
	sts := make([]unix.Stat_t, len(nodes))
	if err := os.Mkdir(filepath.Join(work, "gone"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes {
		p := filepath.Join(work, n.name)
		if n.mode&unix.S_IFMT == unix.S_IFDIR {
			err = unix.Mkdir(p, n.mode&0o777)
		} else {
			err = unix.Mknod(p, n.mode, n.rdev)
		}
		if err != nil {
			t.Fatal(err)
		}
		unix.Chmod(p, n.mode&0o777)
		unix.Chown(p, 1234, 5678)
		unix.UtimesNano(p, mtime)
		if err := unix.Stat(p, &sts[i]); err != nil {
			t.Fatal(err)
		}
		g := &ghost{id: uint32(i + 1), src: "/nonexistent: a node is never opened", name: p, st: sts[i]}
		if err := g.write(dir); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"gone/dir", "gone", "fifo", "null"} {
		if err := os.Remove(filepath.Join(work, n)); err != nil {
			t.Fatal(err)
		}
	}
	rdir, err := images.Open(imgs)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRestorer(RestoreOptions{}, rdir, nil, nil)
	for i, n := range nodes {
		name := filepath.Join(work, n.name)
		p, made, err := r.createGhost(uint32(i+1), &regfile.RegFileEntry{Name: proto.String(name), Mode: proto.Uint32(n.mode)})
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
		if p != filepath.Join(work, n.want) {
			t.Errorf("%s: ghost made as %s, want %s", n.name, p, n.want)
		}
		var got unix.Stat_t
		if err := unix.Stat(p, &got); err != nil {
			t.Fatal(err)
		}
		if got.Mode != sts[i].Mode || got.Rdev != sts[i].Rdev || got.Uid != 1234 || got.Gid != 5678 || got.Mtim.Sec != 1e9 {
			t.Errorf("%s: ghost mode %#o rdev %#x owner %d:%d mtime %d, want %#o %#x 1234:5678 %d", n.name, got.Mode, got.Rdev, got.Uid, got.Gid, got.Mtim.Sec, sts[i].Mode, sts[i].Rdev, int64(1e9))
		}
		for _, m := range made {
			if err := os.Remove(m); err != nil {
				t.Errorf("%s: remove %s: %v", n.name, m, err)
			}
		}
	}
	ents, _ := os.ReadDir(work)
	if len(ents) != 1 || ents[0].Name() != "taken" {
		t.Errorf("left in the work dir: %v (want only taken)", ents)
	}
}

// TestGhostBadMode: a ghost entry of a mode that cannot be made, a device
// without rdev, or of another type than its path entry is refused with
// the image and offset named, and nothing is made.
func TestGhostBadMode(t *testing.T) {
	work := t.TempDir()
	imgs := t.TempDir()
	dir, err := images.Create(imgs)
	if err != nil {
		t.Fatal(err)
	}
	bad := []struct {
		ge   *ghostfile.GhostFileEntry
		mode uint32 // of the path entry
		want string
	}{
		{&ghostfile.GhostFileEntry{Mode: proto.Uint32(unix.S_IFSOCK | 0o600)}, unix.S_IFSOCK | 0o600, "mode 0140600"},
		{&ghostfile.GhostFileEntry{Mode: proto.Uint32(unix.S_IFLNK | 0o777)}, unix.S_IFLNK | 0o777, "mode 0120777"},
		{&ghostfile.GhostFileEntry{Mode: proto.Uint32(unix.S_IFCHR | 0o600)}, unix.S_IFCHR | 0o600, "without its device number"},
		{&ghostfile.GhostFileEntry{Mode: proto.Uint32(unix.S_IFIFO | 0o600)}, unix.S_IFDIR | 0o700, "a ghost fifo for"},
		{&ghostfile.GhostFileEntry{Mode: proto.Uint32(0o1000000 | unix.S_IFIFO)}, unix.S_IFIFO, "bits beyond"},
	}
	for i, b := range bad {
		b.ge.Uid, b.ge.Gid = proto.Uint32(0), proto.Uint32(0)
		if err := dir.Write(ghostName(uint32(i+1)), b.ge); err != nil {
			t.Fatal(err)
		}
	}
	rdir, _ := images.Open(imgs)
	r := NewRestorer(RestoreOptions{}, rdir, nil, nil)
	for i, b := range bad {
		_, _, err := r.createGhost(uint32(i+1), &regfile.RegFileEntry{Name: proto.String(filepath.Join(work, "x")), Mode: proto.Uint32(b.mode)})
		if err == nil || !strings.Contains(err.Error(), ghostName(uint32(i+1))+" at offset 8") || !strings.Contains(err.Error(), b.want) || !errors.Is(err, images.ErrCorrupt) {
			t.Errorf("ghost %d: %v, want an error naming %s at offset 8: %s", i+1, err, ghostName(uint32(i+1)), b.want)
		}
	}
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Errorf("bad ghosts made %v", ents)
	}
}
