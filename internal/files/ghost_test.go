package files

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
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
	if len(id) != 20 {
		t.Errorf("build-id of /bin/true: %v (want 20 bytes)", id)
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
