package mem

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// TestShmemRoundTrip: an object's data ranges, and only those, go to the
// images, and come back at their offsets with the holes kept.
func TestShmemRoundTrip(t *testing.T) {
	require.RootFor(t, "shared memory is opened through /proc/self/map_files, which needs CAP_SYS_ADMIN")
	const size = 16 * PageSize
	src, err := NewShmem(size)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	page := bytes.Repeat([]byte("0123456789abcdef"), PageSize/16)
	for _, off := range []int64{0, PageSize, 10 * PageSize} {
		if _, err := src.WriteAt(page, off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.WriteAt([]byte("tail"), 15*PageSize+7); err != nil {
		t.Fatal(err)
	}
	dir, err := images.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := DumpShmem(dir, src, size, 77, 3); err != nil {
		t.Fatal(err)
	}
	r, err := dir.NewReader(ShmemPagemap(77))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Next(&pagemap.PagemapHead{}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		e := &pagemap.PagemapEntry{}
		if err := r.Next(e); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%#x+%d", e.GetVaddr(), e.GetNrPages()))
	}
	r.Close()
	if want := []string{"0x0+2", "0xa000+1", "0xf000+1"}; !slices.Equal(got, want) {
		t.Errorf("pagemap entries %q, want %q", got, want)
	}

	dst, err := NewShmem(size)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := FillShmem(dir, 77, size, dst); err != nil {
		t.Fatal(err)
	}
	a, b := make([]byte, size), make([]byte, size)
	src.ReadAt(a, 0)
	dst.ReadAt(b, 0)
	if !bytes.Equal(a, b) {
		t.Error("the restored object differs")
	}
	if h, err := unix.Seek(int(dst.Fd()), 2*PageSize, unix.SEEK_DATA); err != nil || h != 10*PageSize {
		t.Errorf("data after page 2 at %d (%v), want the hole up to page 10 kept", h, err)
	}
	// An object without an image had no data.
	if err := FillShmem(dir, 78, size, dst); err != nil {
		t.Errorf("FillShmem of an object without an image: %v", err)
	}
}

// TestShmemBadEntry: an entry beyond the object is reported with the
// image's name and offset.
func TestShmemBadEntry(t *testing.T) {
	require.RootFor(t, "shared memory is opened through /proc/self/map_files, which needs CAP_SYS_ADMIN")
	dir, err := images.Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.Write(ShmemPagemap(5), &pagemap.PagemapHead{PagesId: proto.Uint32(1)},
		&pagemap.PagemapEntry{Vaddr: proto.Uint64(64 * PageSize), CompatNrPages: proto.Uint32(0), NrPages: proto.Uint64(1), Flags: proto.Uint32(PEPresent)}); err != nil {
		t.Fatal(err)
	}
	f, err := dir.CreateRaw("pages-1.img")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, PageSize))
	f.Close()
	dst, err := NewShmem(4 * PageSize)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	err = FillShmem(dir, 5, 4*PageSize, dst)
	if !errors.Is(err, images.ErrCorrupt) || !strings.Contains(err.Error(), "pagemap-shmem-5.img at offset") {
		t.Errorf("FillShmem of an entry beyond the object: %v", err)
	}
}
