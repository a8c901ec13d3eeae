package proc

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// seed adds every fixture whose name matches one of the patterns.
func seed(f *testing.F, patterns ...string) {
	for _, p := range patterns {
		names, _ := filepath.Glob(filepath.Join("testdata", p))
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

func FuzzParseMaps(f *testing.F) {
	seed(f, "*.maps")
	f.Add([]byte("7f-80 r-xs 1000 103:1f 12                                                /a b (deleted)\n"))
	f.Add([]byte("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		vmas, err := ParseMaps(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, v := range vmas {
			if v.End <= v.Start {
				t.Fatalf("accepted empty range %+v", v)
			}
			if strings.ContainsRune(v.Path, '\n') {
				t.Fatalf("path %q spans lines", v.Path)
			}
		}
	})
}

func FuzzParseSmaps(f *testing.F) {
	seed(f, "*.smaps")
	f.Add([]byte("7f-80 r--p 0 00:00 0\nRss: 4 kB\nVmFlags: rd\n"))
	f.Add([]byte("7f-80 rw-p 0 00:00 0 [stack]\nSize: 4 kB\nRss: 4 kB\nVmFlags: rd wr mr mw me gd ac\n7f-90 r--p 0 00:00 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		vmas, err := ParseSmaps(bytes.NewReader(b))
		if err == nil {
			for _, v := range vmas {
				_ = v.HasFlag("rd")
				_ = v.Len()
			}
		}
	})
}

func FuzzParseStat(f *testing.F) {
	seed(f, "*.stat")
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseStat(bytes.NewReader(b))
	})
}

func FuzzParseStatus(f *testing.F) {
	seed(f, "*.status")
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseStatus(bytes.NewReader(b))
	})
}

func FuzzParseFdinfo(f *testing.F) {
	seed(f, "fdinfo-*")
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseFdinfo(bytes.NewReader(b))
	})
}

func FuzzParseAuxv(f *testing.F) {
	seed(f, "*.auxv")
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseAuxv(b)
		if err == nil && len(a)*8 != len(b) {
			t.Fatalf("%d words from %d bytes", len(a), len(b))
		}
	})
}

func FuzzParseMountinfo(f *testing.F) {
	seed(f, "*.mountinfo")
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ParseMountinfo(bytes.NewReader(b))
	})
}

func FuzzParseChildren(f *testing.F) {
	f.Add([]byte("1 2 3 "))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseChildren(b)
	})
}
