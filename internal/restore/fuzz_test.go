package restore

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// The restore reads and cross-checks every image (readImages, then the
// tree's helpers) before it creates anything. These targets feed it the
// real dumps of test/images with one image replaced by the fuzzer's
// bytes, one target per image kind, and check that it never panics,
// never allocates what a corrupt length claims, and that every error
// names the image file at fault.

// fuzzImageSet fuzzes the image(s) matching glob in every seed dump.
func fuzzImageSet(f *testing.F, glob string) {
	seeds := testutil.SeedDumps(f)
	base := f.TempDir()
	type seedDir struct {
		dir   string
		names []string // files matching glob
	}
	var dirs []seedDir
	for i, src := range seeds {
		dst := filepath.Join(base, filepath.Base(src))
		testutil.CopySeed(f, src, dst, false)
		names, _ := filepath.Glob(filepath.Join(dst, glob))
		sort.Strings(names)
		dirs = append(dirs, seedDir{dst, names})
		for j, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), uint8(j), b)
		}
	}
	f.Fuzz(func(t *testing.T, seed, file uint8, data []byte) {
		sd := dirs[int(seed)%len(dirs)]
		if len(sd.names) == 0 {
			t.Skip("no such image in this dump")
		}
		name := sd.names[int(file)%len(sd.names)]
		orig, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(name, orig, 0o600)
		var s *imageSet
		testutil.CheckAlloc(t, "readImages", func() {
			s, err = readImages(sd.dir)
			if err == nil {
				err = s.addHelpers(false)
			}
		})
		if err == nil {
			// Accepted: what the restore derives from it next must hold.
			if s.root == nil || len(s.all) == 0 {
				t.Fatal("accepted an image set without a root task")
			}
			_ = s.allPids()
			_ = s.maxFd()
			return
		}
		checkNamesImage(t, err)
	})
}

// checkNamesImage fails t unless err names an image file.
func checkNamesImage(t *testing.T, err error) {
	t.Helper()
	if msg := err.Error(); !strings.Contains(msg, ".img") {
		t.Fatalf("error names no image file: %v", err)
	}
}

func FuzzInventory(f *testing.F) { fuzzImageSet(f, "inventory.img") }
func FuzzPstree(f *testing.F)    { fuzzImageSet(f, "pstree.img") }
func FuzzFilesImg(f *testing.F)  { fuzzImageSet(f, "files.img") }
func FuzzMemfdImg(f *testing.F)  { fuzzImageSet(f, "memfd.img") }
func FuzzSeccomp(f *testing.F)   { fuzzImageSet(f, "seccomp.img") }
func FuzzCore(f *testing.F)      { fuzzImageSet(f, "core-*.img") }
func FuzzIds(f *testing.F)       { fuzzImageSet(f, "ids-*.img") }
func FuzzMM(f *testing.F)        { fuzzImageSet(f, "mm-*.img") }
func FuzzPagemap(f *testing.F)   { fuzzImageSet(f, "pagemap-[0-9]*.img") }
func FuzzFs(f *testing.F)        { fuzzImageSet(f, "fs-*.img") }
func FuzzFdinfo(f *testing.F)    { fuzzImageSet(f, "fdinfo-*.img") }
