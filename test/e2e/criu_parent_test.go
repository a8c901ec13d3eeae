package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// pagemap_entry flags (criu/include/pagemap.h).
const (
	pePresent = 1 << 2
	peParent  = 1 << 0
	peLazy    = 1 << 1
)

// TestCrossParentChain: a chain of three criu 4.2 dumps of a victim whose
// memory changes between them (dirty.c: generation 2 rewrites every third
// page, generation 3 every fourth and maps a new area), the last two
// saving only what changed, with PE_PARENT entries for the rest and a
// "parent" link to the previous dir. stasis restores the last dir: pages
// come from each of the three levels; the victim checks every page.
//
// criu makes such a chain with pre-dump and dump --prev-images-dir
// --track-mem, which need the kernel's soft-dirty bits. Where the kernel
// has none (criu check: "Dirty tracking is OFF", as on these machines)
// the chain is made from three full criu dumps (-R for the first two):
// each later one has the pages equal to the previous dump's rewritten
// as PE_PARENT holes, as criu's dump writes pages that were not written
// since its parent (criu's vDSO and AIO pages stay, it always saves them).
// criu 4.2 restores the chain as well (it needs no soft-dirty for that).
// A dir without its parent link, or whose parent lacks pages, fails the
// restore with the reason and leaves nothing.
func TestCrossParentChain(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	criu := testutil.CRIU(t)
	v := testutil.StartVictim(t, "dirty")
	v.WaitReady(t)
	root := t.TempDir()
	dirs := []string{filepath.Join(root, "1"), filepath.Join(root, "2"), filepath.Join(root, "3")}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	next := func(g int) {
		t.Helper()
		v.Signal(t, unix.SIGUSR1)
		ready := fmt.Sprintf("%s.g%d", v.Ready, g)
		testutil.WaitFor(t, 10*time.Second, "generation "+fmt.Sprint(g), func() bool {
			_, err := os.Stat(ready)
			return err == nil
		})
	}
	if exec.Command(criu, "check", "--feature", "mem_dirty_track").Run() == nil {
		t.Log("criu pre-dump, pre-dump --prev-images-dir, dump --prev-images-dir (the kernel tracks dirty pages)")
		preDump := func(dir string, extra ...string) {
			t.Helper()
			r := testutil.RunCRIU(t, 30*time.Second, dir, append([]string{"pre-dump", "-t", fmt.Sprint(v.Pid), "-D", dir}, extra...)...)
			if r.Code != 0 {
				t.Fatalf("criu 4.2 pre-dump failed (exit %d): %s\n%s", r.Code, testutil.CriuErrors(r.Log), r)
			}
		}
		preDump(dirs[0])
		next(2)
		preDump(dirs[1], "--prev-images-dir", "../1", "--track-mem")
		next(3)
		testutil.CriuDump(t, v.Pid, dirs[2], "--prev-images-dir", "../2", "--track-mem")
	} else {
		t.Log("criu 4.2 cannot pre-dump here (no soft-dirty: Dirty tracking is OFF): the chain is made from three full criu dumps")
		testutil.CriuDump(t, v.Pid, dirs[0], "-R")
		next(2)
		testutil.CriuDump(t, v.Pid, dirs[1], "-R")
		next(3)
		testutil.CriuDump(t, v.Pid, dirs[2])
		// The last level first: it is compared with the full second one.
		n3 := makeChild(t, dirs[2], dirs[1])
		n2 := makeChild(t, dirs[1], dirs[0])
		t.Logf("pages in parent: %d of dir 3, %d of dir 2", n3, n2)
	}
	v.Reap(t)
	own, parent := pagemapCounts(t, dirs[2])
	t.Logf("dir 3: %d pages of its own, %d in parent", own, parent)
	if parent == 0 {
		t.Fatalf("dir 3 has no page in parent: no chain to test")
	}

	t.Run("no-parent-link", func(t *testing.T) {
		bad := copyWithoutParent(t, dirs[2])
		msg := testutil.RestoreFail(t, bad)
		testutil.AssertContains(t, msg, "pagemap-", "in the parent", bad, "has no parent link")
	})
	t.Run("parent-lacks-pages", func(t *testing.T) {
		// A parent with the pages of the second level only (its own
		// entries in parent gone) fails at the grandparent.
		broot := t.TempDir()
		b2 := copyWithoutParent(t, dirs[1])
		b3 := copyWithoutParent(t, dirs[2])
		for _, mv := range [][2]string{{b2, filepath.Join(broot, "2")}, {b3, filepath.Join(broot, "3")}} {
			if err := os.Rename(mv[0], mv[1]); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink("../2", filepath.Join(broot, "3", "parent")); err != nil {
			t.Fatal(err)
		}
		msg := testutil.RestoreFail(t, filepath.Join(broot, "3"))
		testutil.AssertContains(t, msg, "in parent", filepath.Join(broot, "2"), "has no parent link")
	})

	// criu 4.2 restores the chain too (the oracle for the made one).
	testutil.CriuRestoreDetached(t, dirs[2], v)
	v.TermAndCheck(t)
	testutil.AssertContains(t, v.LogTail(), "generations: 3", "new mapping intact")

	testutil.RestoreDetached(t, dirs[2], v)
	v.TermAndCheck(t)
	testutil.AssertContains(t, v.LogTail(), "generations: 3", "new mapping intact")
}

// copyWithoutParent copies the regular files of dir (not its parent link) into a
// new dir.
func copyWithoutParent(t *testing.T, dir string) string {
	t.Helper()
	out := t.TempDir()
	copyImages(t, dir, out, func(os.DirEntry) bool { return true })
	return out
}

// pagemapCounts sums the pages of dir's task pagemaps: with data, in parent.
func pagemapCounts(t *testing.T, dir string) (own, parent uint64) {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "pagemap-*.img"))
	for _, p := range names {
		_, ents := readPagemap(t, dir, filepath.Base(p))
		for _, pe := range ents {
			if pe.GetFlags()&peParent != 0 {
				parent += pe.GetNrPages()
			} else if pe.GetFlags()&pePresent != 0 {
				own += pe.GetNrPages()
			}
		}
	}
	return own, parent
}

func readPagemap(t *testing.T, dir, name string) (*pagemap.PagemapHead, []*pagemap.PagemapEntry) {
	t.Helper()
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := d.NewReader(name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	head := &pagemap.PagemapHead{}
	if err := r.Must(head); err != nil {
		t.Fatal(err)
	}
	var out []*pagemap.PagemapEntry
	for {
		pe := &pagemap.PagemapEntry{}
		if err := r.Next(pe); err != nil {
			if errors.Is(err, io.EOF) {
				return head, out
			}
			t.Fatal(err)
		}
		out = append(out, pe)
	}
}

// fullPages maps each page address of a task pagemap of dir to its data.
func fullPages(t *testing.T, dir, name string) map[uint64][]byte {
	t.Helper()
	head, ents := readPagemap(t, dir, name)
	data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("pages-%d.img", head.GetPagesId())))
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64][]byte{}
	var off uint64
	for _, pe := range ents {
		if pe.GetFlags()&pePresent == 0 {
			continue
		}
		for i := uint64(0); i < pe.GetNrPages(); i++ {
			out[pe.GetVaddr()+i*4096] = data[off : off+4096]
			off += 4096
		}
	}
	return out
}

// makeChild rewrites the task pagemaps of dir, a full criu dump, as criu's
// dump --prev-images-dir writes them over parent (a full dump too): the
// pages equal to the parent's become PE_PARENT entries without data, the
// others stay (with their flags); the pages image keeps only those, and a
// "parent" link names the parent's dir. It returns the pages in parent.
func makeChild(t *testing.T, dir, parent string) uint64 {
	t.Helper()
	var inParent uint64
	names, _ := filepath.Glob(filepath.Join(dir, "pagemap-*.img"))
	for _, p := range names {
		name := filepath.Base(p)
		if strings.HasPrefix(name, "pagemap-shmem-") {
			continue
		}
		pid := strings.TrimSuffix(strings.TrimPrefix(name, "pagemap-"), ".img")
		if _, err := os.Stat(filepath.Join(parent, name)); err != nil {
			continue // a task the parent did not have
		}
		head, ents := readPagemap(t, dir, name)
		mine := fullPages(t, dir, name)
		theirs := fullPages(t, parent, name)
		always := alwaysDumped(t, dir, pid)
		var out []proto.Message
		out = append(out, head)
		var pages bytes.Buffer
		add := func(addr uint64, flags uint32) {
			if l := len(out) - 1; l > 0 {
				last := out[l].(*pagemap.PagemapEntry)
				if last.GetFlags() == flags && last.GetVaddr()+last.GetNrPages()*4096 == addr {
					last.NrPages = proto.Uint64(last.GetNrPages() + 1)
					return
				}
			}
			out = append(out, &pagemap.PagemapEntry{Vaddr: proto.Uint64(addr), CompatNrPages: proto.Uint32(0),
				NrPages: proto.Uint64(1), Flags: proto.Uint32(flags)})
		}
		for _, pe := range ents {
			for i := uint64(0); i < pe.GetNrPages(); i++ {
				addr := pe.GetVaddr() + i*4096
				if old, ok := theirs[addr]; ok && !always(addr) && bytes.Equal(old, mine[addr]) {
					add(addr, peParent)
					inParent++
					continue
				}
				add(addr, pe.GetFlags())
				pages.Write(mine[addr])
			}
		}
		d, err := images.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Write(name, out...); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("pages-%d.img", head.GetPagesId())), pages.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rel, err := filepath.Rel(dir, parent)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(rel, filepath.Join(dir, "parent")); err != nil {
		t.Fatal(err)
	}
	return inParent
}

// alwaysDumped reports the pages criu saves whatever the parent has: those
// of the vDSO and AIO rings (mem.c should_dump_entire_vma).
func alwaysDumped(t *testing.T, dir, pid string) func(uint64) bool {
	t.Helper()
	const vdso, aio = 1 << 3, 1 << 13 // VMA_AREA_VDSO, VMA_AREA_AIORING
	ms := testutil.ReadImage(t, dir, "mm-"+pid+".img", func() *mm.MmEntry { return &mm.MmEntry{} })
	var spans [][2]uint64
	for _, v := range ms[0].GetVmas() {
		if v.GetStatus()&(vdso|aio) != 0 {
			spans = append(spans, [2]uint64{v.GetStart(), v.GetEnd()})
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i][0] < spans[j][0] })
	return func(addr uint64) bool {
		for _, s := range spans {
			if addr >= s[0] && addr < s[1] {
				return true
			}
		}
		return false
	}
}
