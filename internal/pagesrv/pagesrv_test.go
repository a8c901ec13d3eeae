package pagesrv

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

func entry(vaddr, n uint64, flags uint32) *pagemap.PagemapEntry {
	return &pagemap.PagemapEntry{Vaddr: proto.Uint64(vaddr), NrPages: proto.Uint64(n), Flags: proto.Uint32(flags)}
}

// serve runs a session on one end of a pipe and returns the other.
func serve(t *testing.T, dir string) (*Client, chan error) {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := Serve(b, dir, true, nil)
		b.Close()
		done <- err
	}()
	return newClient(a, "pipe", true), done
}

func TestSession(t *testing.T) {
	dir := t.TempDir()
	c, done := serve(t, dir)
	if has, err := c.HasParent(42); err != nil || has {
		t.Fatalf("HasParent: %v %v", has, err)
	}
	x, err := c.Open(42)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{7}, 2*pageSize)
	for _, step := range []func() error{
		func() error { return x.Add(entry(0x10000, 2, pePresent)) },
		func() error { _, err := x.Write(data); return err },
		func() error { return x.Add(entry(0x20000, 3, peParent)) },
		x.Close, c.Close,
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "pages-65537.img"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("pages image: %d bytes, %v", len(got), err)
	}
	d, _ := images.Open(dir)
	r, err := d.NewReader("pagemap-42.img")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	head := &pagemap.PagemapHead{}
	if err := r.Must(head); err != nil || head.GetPagesId() != 65537 {
		t.Fatalf("head %v %v", head, err)
	}
	for _, want := range []*pagemap.PagemapEntry{entry(0x10000, 2, pePresent), entry(0x20000, 3, peParent)} {
		pe := &pagemap.PagemapEntry{}
		if err := r.Must(pe); err != nil || pe.GetVaddr() != want.GetVaddr() || pe.GetNrPages() != want.GetNrPages() || pe.GetFlags() != want.GetFlags() {
			t.Fatalf("entry %v, want %v (%v)", pe, want, err)
		}
	}
}

// TestDropped: a dump that goes away in the middle of its pages leaves
// nothing in the server's dir.
func TestDropped(t *testing.T) {
	dir := t.TempDir()
	c, done := serve(t, dir)
	x, err := c.Open(7)
	if err != nil {
		t.Fatal(err)
	}
	if err := x.Add(entry(0x10000, 4, pePresent)); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Write(make([]byte, pageSize)); err != nil {
		t.Fatal(err)
	}
	_ = c.w.Flush()
	c.Abort()
	if err := <-done; !errors.Is(err, ErrNotFlushed) {
		t.Fatalf("Serve: %v, want ErrNotFlushed", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("%d files left in the server's dir", len(ents))
	}
}

func TestPagemapName(t *testing.T) {
	for dst, want := range map[uint64]string{42<<8 | 1: "pagemap-42.img", 42<<8 | 11: "pagemap-42.img", 5<<8 | 2: "pagemap-shmem-5.img"} {
		if got, err := pagemapName(dst); err != nil || got != want {
			t.Errorf("pagemapName(%#x) = %q, %v; want %q", dst, got, err, want)
		}
	}
	if _, err := pagemapName(3); !errors.Is(err, ErrProtocol) {
		t.Errorf("type 3: %v", err)
	}
}
