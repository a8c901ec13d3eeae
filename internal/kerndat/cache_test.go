package kerndat

import (
	"debug/elf"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain keeps the tests away from the real cache (/run/stasis.kdat),
// which belongs to the stasis binary, not to the test binary.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kerndat-test-")
	if err != nil {
		panic(err)
	}
	cachePath = filepath.Join(dir, cacheName)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// resetCache forgets what this process probed or read, as a new process.
func resetCache(t *testing.T, path string) {
	t.Helper()
	old := cachePath
	cachePath = path
	for _, g := range groups {
		g.mu.Lock()
		g.res, g.probed = nil, false
		g.mu.Unlock()
	}
	cache.Lock()
	cache.loaded, cache.dirty, cache.fs = false, false, nil
	cache.Unlock()
	t.Cleanup(func() {
		cachePath = old
		for _, g := range groups {
			g.mu.Lock()
			g.res, g.probed = nil, false
			g.mu.Unlock()
		}
		cache.Lock()
		cache.loaded, cache.dirty, cache.fs = false, false, nil
		cache.Unlock()
	})
}

func TestCacheKey(t *testing.T) {
	k, err := currentKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(k.BootID) != 36 || k.Build == "" || k.CapEff == "" || !strings.Contains(k.Seccomp, "mode ") {
		t.Errorf("key %+v", k)
	}
}

// TestCacheUsed: a second process (reset) answers from the file the first
// wrote, without probing; the file is private to its owner.
func TestCacheUsed(t *testing.T) {
	path := filepath.Join(t.TempDir(), cacheName)
	resetCache(t, path)
	if _, ok := Lookup(Kcmp); !ok {
		t.Fatal("no kcmp")
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("cache not written: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("cache mode %v, want 0600", st.Mode())
	}
	// Doctor the file as if kcmp had been found missing: the next process
	// must believe it, which shows that it did not probe.
	k, _ := currentKey()
	fs, err := readCache(path, k)
	if err != nil || len(fs) != 1 || fs[0].Name != Kcmp {
		t.Fatalf("cache holds %+v, %v; want only kcmp", fs, err)
	}
	fs[0].OK, fs[0].Detail = false, "from the cache"
	if err := writeCache(path, cacheFile{Version: cacheVersion, Entries: []cacheEntry{{Key: k, Features: toCached(fs)}}}); err != nil {
		t.Fatal(err)
	}
	resetCache(t, path)
	if f, _ := Lookup(Kcmp); f.Detail != "from the cache" || f.Impact == "" || !f.Required {
		t.Errorf("kcmp = %+v, want the cached answer with its impact", f)
	}
	// Probe (stasis check) probes again and rewrites the file.
	for _, f := range Probe() {
		if f.Name == Kcmp && f.Detail == "from the cache" {
			t.Errorf("Probe answered from the cache")
		}
	}
	fs, err = readCache(path, k)
	if err != nil || len(fs) != len(Probe())-3 { // caps (2) and pid_max are not cached
		t.Errorf("after Probe the cache holds %d features, %v", len(fs), err)
	}
	for _, f := range fs {
		if f.Name == Kcmp && f.Detail == "from the cache" {
			t.Errorf("Probe did not rewrite the cache")
		}
	}
}

// TestCacheRejected: a file of another boot or build, a damaged one, or
// one others may have written is ignored (probed again and replaced),
// silently.
func TestCacheRejected(t *testing.T) {
	k, err := currentKey()
	if err != nil {
		t.Fatal(err)
	}
	planted := []Feature{{Name: Kcmp, Detail: "planted"}}
	otherBoot, otherBuild := k, k
	otherBoot.BootID = "00000000-0000-0000-0000-000000000000"
	otherBuild.Build = "another/build"
	for _, tc := range []struct {
		name  string
		write func(path string) error
	}{
		{"other boot", func(p string) error {
			return writeCache(p, cacheFile{Version: cacheVersion, Entries: []cacheEntry{{Key: otherBoot, Features: toCached(planted)}}})
		}},
		{"other build", func(p string) error {
			return writeCache(p, cacheFile{Version: cacheVersion, Entries: []cacheEntry{{Key: otherBuild, Features: toCached(planted)}}})
		}},
		{"other version", func(p string) error {
			return writeCache(p, cacheFile{Version: cacheVersion + 1, Entries: []cacheEntry{{Key: k, Features: toCached(planted)}}})
		}},
		{"corrupt", func(p string) error { return os.WriteFile(p, []byte(`{"version":1,"key":`), 0o600) }},
		{"unknown feature", func(p string) error {
			return writeCache(p, cacheFile{Version: cacheVersion, Entries: []cacheEntry{{Key: k, Features: []cachedFeature{{Name: "bogus"}}}}})
		}},
		{"world-writable", func(p string) error {
			if err := writeCache(p, cacheFile{Version: cacheVersion, Entries: []cacheEntry{{Key: k, Features: toCached(planted)}}}); err != nil {
				return err
			}
			return os.Chmod(p, 0o666)
		}},
		{"unreadable dir", func(p string) error { return os.Mkdir(p, 0o700) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), cacheName)
			if err := tc.write(path); err != nil {
				t.Fatal(err)
			}
			resetCache(t, path)
			f, ok := Lookup(Kcmp)
			if !ok || f.Detail == "planted" {
				t.Fatalf("kcmp = %+v: the cache was trusted", f)
			}
			if tc.name == "unreadable dir" {
				return
			}
			if fs, err := readCache(path, k); err != nil || len(fs) != 1 || fs[0].Detail == "planted" {
				t.Errorf("cache not replaced: %+v, %v", fs, err)
			}
		})
	}
}

func TestCacheDisabled(t *testing.T) {
	resetCache(t, "")
	if err := Require(Kcmp); err != nil {
		t.Error(err)
	}
}

// TestCacheKeepsOtherBuilds: another build's entry survives our write, and
// an entry of another boot does not.
func TestCacheKeepsOtherBuilds(t *testing.T) {
	k, err := currentKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), cacheName)
	otherBuild, otherBoot := k, k
	otherBuild.Build = "another/build"
	otherBoot.BootID = "00000000-0000-0000-0000-000000000000"
	planted := []Feature{{Name: Kcmp, Detail: "planted"}}
	if err := writeCache(path, cacheFile{Version: cacheVersion, Entries: []cacheEntry{
		{Key: otherBuild, Features: toCached(planted)}, {Key: otherBoot, Features: toCached(planted)}}}); err != nil {
		t.Fatal(err)
	}
	resetCache(t, path)
	if f, _ := Lookup(Kcmp); f.Detail == "planted" {
		t.Fatal("another build's entry was used")
	}
	c, err := readCacheFile(path)
	if err != nil || len(c.Entries) != 2 || c.Entries[0].Key != k || c.Entries[1].Key != otherBuild {
		t.Errorf("entries %+v, %v; want ours then the other build's", c.Entries, err)
	}
}

func toCached(fs []Feature) []cachedFeature {
	var out []cachedFeature
	for _, f := range fs {
		out = append(out, cachedFeature{Name: f.Name, OK: f.OK, Detail: f.Detail})
	}
	return out
}

// TestBuildID: the quick read of the note agrees with the section.
func TestBuildID(t *testing.T) {
	id, err := buildID()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".note.go.buildid")
	if s == nil {
		t.Skip("no .note.go.buildid section")
	}
	b, _ := s.Data()
	if want, ok := goNote(b); !ok || want != id {
		t.Errorf("buildID %q, section says %q", id, want)
	}
	if strings.Count(id, "/") < 1 {
		t.Errorf("build ID %q: want Go's action/content form", id)
	}
}

// TestNotTraced: a test binary run plainly is not traced, so its probes
// are cached (under strace -f they would not be).
func TestNotTraced(t *testing.T) {
	if traced() {
		t.Skip("this test binary runs under a tracer")
	}
}
