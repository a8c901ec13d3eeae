package mem

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// chainEntry is a pagemap entry of a test chain: n pages at page index
// at, with data (the byte fill) or in parent (fill 0).
type chainEntry struct {
	at, n uint64
	fill  byte
	flags uint32 // 0: PE_PRESENT with fill, PE_PARENT without
}

const chainBase = 0x10000000

// writeLevel writes pagemap-1.img and pages-7.img into dir; parent, if
// set, is the target of its parent link.
func writeLevel(t *testing.T, dir, parent string, ents ...chainEntry) *images.Dir {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(7)}}
	var pages []byte
	for _, e := range ents {
		flags := e.flags
		if flags == 0 {
			flags = PEPresent
			if e.fill == 0 {
				flags = peParent
			}
		}
		msgs = append(msgs, &pagemap.PagemapEntry{Vaddr: proto.Uint64(chainBase + e.at*PageSize),
			CompatNrPages: proto.Uint32(0), NrPages: proto.Uint64(e.n), Flags: proto.Uint32(flags)})
		if flags&PEPresent != 0 {
			pages = append(pages, bytes.Repeat([]byte{e.fill}, int(e.n*PageSize))...)
		}
	}
	if err := d.Write("pagemap-1.img", msgs...); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pages-7.img"), pages, 0o600); err != nil {
		t.Fatal(err)
	}
	if parent != "" {
		if err := os.Symlink(parent, filepath.Join(dir, ParentLink)); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func readEntries(t *testing.T, d *images.Dir) []*pagemap.PagemapEntry {
	t.Helper()
	r, err := d.NewReader("pagemap-1.img")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Must(&pagemap.PagemapHead{}); err != nil {
		t.Fatal(err)
	}
	var out []*pagemap.PagemapEntry
	for {
		pe := &pagemap.PagemapEntry{}
		if err := r.Next(pe); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatal(err)
		}
		out = append(out, pe)
	}
}

// merged resolves the pagemap of d and returns the pages of its entries
// in order, one fill byte per page: the own from pages-7.img, those in
// parent from where ResolveParents found them.
func merged(t *testing.T, d *images.Dir) []byte {
	t.Helper()
	ents := readEntries(t, d)
	p, err := ResolveParents(d, "pagemap-1.img", ents)
	if err != nil {
		t.Fatal(err)
	}
	own, err := os.ReadFile(filepath.Join(d.Path, "pages-7.img"))
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	var off uint64
	var srcs []pageSource
	for _, r := range p.ranges {
		if err := p.chain.sources(r[0], r[1], &srcs); err != nil {
			t.Fatal(err)
		}
	}
	for _, pe := range ents {
		n := NrPages(pe) * PageSize
		if HasData(pe) {
			b = append(b, own[off:off+n]...)
			off += n
			continue
		}
		for got := uint64(0); got < n; {
			s := srcs[0]
			srcs = srcs[1:]
			if s.vaddr != pe.GetVaddr()+got {
				t.Fatalf("source at %#x, want %#x", s.vaddr, pe.GetVaddr()+got)
			}
			data, err := os.ReadFile(s.path)
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, data[s.off:s.off+int64(s.n)]...)
			got += s.n
		}
	}
	var out []byte
	for i := 0; i < len(b); i += PageSize {
		if !bytes.Equal(b[i:i+PageSize], bytes.Repeat(b[i:i+1], PageSize)) {
			t.Fatalf("page %d is not one byte repeated", i/PageSize)
		}
		out = append(out, b[i])
	}
	return out
}

// TestParentChain: a three-level chain, as criu's pre-dump, dump
// --prev-images-dir, dump --prev-images-dir write it. The last level's
// entries in parent take their pages from the level that has them, one
// entry's pages from two levels, and old-style in_parent entries too.
func TestParentChain(t *testing.T) {
	root := t.TempDir()
	writeLevel(t, filepath.Join(root, "1"), "",
		chainEntry{at: 0, n: 8, fill: 'a'}, chainEntry{at: 20, n: 2, fill: 'b'})
	writeLevel(t, filepath.Join(root, "2"), "../1",
		chainEntry{at: 0, n: 2, fill: 'c'}, chainEntry{at: 2, n: 6}, chainEntry{at: 20, n: 2})
	d := writeLevel(t, filepath.Join(root, "3"), "../2",
		chainEntry{at: 0, n: 5}, chainEntry{at: 5, n: 1, fill: 'd'}, chainEntry{at: 6, n: 2}, chainEntry{at: 20, n: 2})
	got := string(merged(t, d))
	if want := "ccaaa" + "d" + "aa" + "bb"; got != want {
		t.Errorf("merged pages %q, want %q", got, want)
	}

	// Old images: in_parent, no flags.
	ents := readEntries(t, d)
	for _, pe := range ents {
		if InParent(pe) {
			pe.Flags, pe.InParent = nil, proto.Bool(true)
		} else {
			pe.Flags = nil
		}
	}
	if _, err := ResolveParents(d, "pagemap-1.img", ents); err != nil {
		t.Errorf("in_parent entries: %v", err)
	}
}

func TestParentChainErrors(t *testing.T) {
	for _, c := range []struct {
		name  string
		setup func(t *testing.T, root string) *images.Dir
		want  []string
		err   error
	}{
		{"no-link", func(t *testing.T, root string) *images.Dir {
			return writeLevel(t, filepath.Join(root, "2"), "", chainEntry{at: 0, n: 2})
		}, []string{"pagemap-1.img entry 0", "0x10000000-0x10002000 are in the parent", "has no parent link"}, ErrNoParent},
		{"broken-link", func(t *testing.T, root string) *images.Dir {
			return writeLevel(t, filepath.Join(root, "2"), "../gone", chainEntry{at: 0, n: 2})
		}, []string{"parent link", "-> ../gone"}, ErrNoParent},
		{"parent-lacks-pages", func(t *testing.T, root string) *images.Dir {
			writeLevel(t, filepath.Join(root, "1"), "", chainEntry{at: 0, n: 1, fill: 'a'})
			return writeLevel(t, filepath.Join(root, "2"), "../1", chainEntry{at: 0, n: 2})
		}, []string{"pages 0x10001000-0x10002000 are not in pagemap-1.img of parent images dir"}, ErrNoParent},
		{"grandparent-missing", func(t *testing.T, root string) *images.Dir {
			writeLevel(t, filepath.Join(root, "1"), "", chainEntry{at: 0, n: 2})
			return writeLevel(t, filepath.Join(root, "2"), "../1", chainEntry{at: 0, n: 2})
		}, []string{"has no parent link"}, ErrNoParent},
		{"loop", func(t *testing.T, root string) *images.Dir {
			writeLevel(t, filepath.Join(root, "1"), "../2", chainEntry{at: 0, n: 2})
			return writeLevel(t, filepath.Join(root, "2"), "../1", chainEntry{at: 0, n: 2})
		}, []string{"loop of parent links"}, ErrNoParent},
		{"no-data", func(t *testing.T, root string) *images.Dir {
			return writeLevel(t, filepath.Join(root, "2"), "", chainEntry{at: 0, n: 2, flags: 1 << 5})
		}, []string{"entry 0", "flags 0x20", "lazy pages"}, ErrLazyPages},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := c.setup(t, t.TempDir())
			_, err := ResolveParents(d, "pagemap-1.img", readEntries(t, d))
			if !errors.Is(err, c.err) {
				t.Fatalf("got %v, want %v", err, c.err)
			}
			t.Log(err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestShmemFromParent: a shmem pagemap entry in parent is filled from the
// parent's pages, clipped at the object's size.
func TestShmemFromParent(t *testing.T) {
	root := t.TempDir()
	p := writeLevel(t, filepath.Join(root, "1"), "", chainEntry{at: 0, n: 3, fill: 'a'})
	d := writeLevel(t, filepath.Join(root, "2"), "../1", chainEntry{at: 0, n: 1, fill: 'b'}, chainEntry{at: 1, n: 2})
	// The test images are at chainBase; as a shmem pagemap they start at 0.
	for _, dir := range []*images.Dir{p, d} {
		ents := readEntries(t, dir)
		msgs := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(7)}}
		for _, pe := range ents {
			pe.Vaddr = proto.Uint64(pe.GetVaddr() - chainBase)
			msgs = append(msgs, pe)
		}
		if err := dir.Write(ShmemPagemap(5), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	out, err := os.CreateTemp(t.TempDir(), "shmem")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	size := int64(2*PageSize + 100)
	if err := FillShmem(d, 5, size, out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat([]byte{'b'}, PageSize), bytes.Repeat([]byte{'a'}, PageSize+100)...)
	if !bytes.Equal(b, want) {
		t.Errorf("shmem object: %d bytes, want %d (b then a)", len(b), len(want))
	}
}
