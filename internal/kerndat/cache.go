package kerndat

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// The results of the probes are kept between runs in one file, as criu
// keeps /run/criu.kdat: probing costs a tiny dump or restore more than the
// rest of it (the ptrace session with a forked `sleep` alone takes ~10 ms
// on a loaded 2-CPU machine). The file is only trusted for the kernel boot
// and the stasis build that wrote it and for the same effective
// credentials (capabilities and seccomp change what the kernel allows);
// anything else, or a file that cannot be read or parsed, is silently
// probed again and rewritten. `stasis check` (Probe) always probes.
//
// What a boot does not fix (a sysctl such as pid_max, the caller's
// capabilities) is in volatile groups, probed every time: they are cheap.

// cacheName is the file's name in its directory (/run for root, as criu;
// $XDG_RUNTIME_DIR otherwise).
const cacheName = "stasis.kdat"

// cacheVersion changes when the file's layout does.
const cacheVersion = 1

// cachePath is where the cache is read and written; "" disables it. Tests
// point it elsewhere.
var cachePath = defaultCachePath()

func defaultCachePath() string {
	if os.Geteuid() == 0 {
		return "/run/" + cacheName
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, cacheName)
	}
	return ""
}

// cacheFile holds an entry per build, so that several stasis binaries in
// use on one machine (a test suite, an installed criu replacement) do not
// throw each other's results away.
type cacheFile struct {
	Version int          `json:"version"`
	Entries []cacheEntry `json:"entries"` // the most recently written first
}

type cacheEntry struct {
	Key      cacheKey        `json:"key"`
	Features []cachedFeature `json:"features"`
}

// cachedFeature is what a probe found; the rest of a Feature is the
// binary's own table (info).
type cachedFeature struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// maxCacheEntries bounds the file: old builds drop out.
const maxCacheEntries = 8

// cacheKey is what the cached answers depend on.
type cacheKey struct {
	BootID  string `json:"boot_id"` // /proc/sys/kernel/random/boot_id
	Build   string `json:"build"`   // the Go build ID of the running binary
	Euid    int    `json:"euid"`    //
	CapEff  string `json:"cap_eff"` // effective capabilities
	Seccomp string `json:"seccomp"` // seccomp mode and no_new_privs of this process
	Kernel  string `json:"kernel"`  // uname release and version, for a reader
}

var cache struct {
	sync.Mutex
	loaded bool
	key    cacheKey
	keyErr error
	fs     map[string]Feature // what the file had, or what this process probed
	dirty  bool               // fs has results the file lacks
}

// cached returns the cached results of names, all or nothing.
func cached(names []string) ([]Feature, bool) {
	cache.Lock()
	defer cache.Unlock()
	loadLocked()
	out := make([]Feature, 0, len(names))
	for _, n := range names {
		f, ok := cache.fs[n]
		if !ok {
			return nil, false
		}
		out = append(out, f)
	}
	return out, true
}

// remember records freshly probed results, written by the next flush.
func remember(fs []Feature) {
	cache.Lock()
	defer cache.Unlock()
	loadLocked()
	for _, f := range fs {
		cache.fs[f.Name] = f
	}
	cache.dirty = true
}

func loadLocked() {
	if cache.loaded {
		return
	}
	cache.loaded = true
	cache.fs = map[string]Feature{}
	if cachePath == "" {
		return
	}
	cache.key, cache.keyErr = currentKey()
	if cache.keyErr != nil {
		return
	}
	fs, err := readCache(cachePath, cache.key)
	if err != nil {
		return // re-probe: a stale or damaged cache is no error
	}
	for _, f := range fs {
		cache.fs[f.Name] = f
	}
}

// flush writes the cache if this process probed something it lacked.
// Failures are ignored: the cache only saves time.
func flush() {
	cache.Lock()
	defer cache.Unlock()
	if !cache.dirty || cachePath == "" || cache.keyErr != nil {
		return
	}
	cache.dirty = false
	// Under strace -f or gdb the probes' ptrace of their own children
	// fails (EPERM): answers that would make every later dump refuse.
	if traced() {
		return
	}
	fs := make([]cachedFeature, 0, len(cache.fs))
	for _, g := range groups {
		for _, n := range g.names {
			if f, ok := cache.fs[n]; ok {
				fs = append(fs, cachedFeature{Name: f.Name, OK: f.OK, Detail: f.Detail})
			}
		}
	}
	c := cacheFile{Version: cacheVersion, Entries: []cacheEntry{{Key: cache.key, Features: fs}}}
	if old, err := readCacheFile(cachePath); err == nil && old.Version == cacheVersion {
		for _, e := range old.Entries {
			if e.Key != cache.key && e.Key.BootID == cache.key.BootID && len(c.Entries) < maxCacheEntries {
				c.Entries = append(c.Entries, e)
			}
		}
	}
	_ = writeCache(cachePath, c)
}

// readCache returns the features cached at path for key.
func readCache(path string, key cacheKey) ([]Feature, error) {
	c, err := readCacheFile(path)
	if err != nil {
		return nil, err
	}
	if c.Version != cacheVersion {
		return nil, fmt.Errorf("kdat cache %s: version %d, want %d", path, c.Version, cacheVersion)
	}
	for _, e := range c.Entries {
		if e.Key != key {
			continue
		}
		fs := make([]Feature, len(e.Features))
		for i, c := range e.Features {
			in, known := info[c.Name]
			if !known {
				return nil, fmt.Errorf("kdat cache %s: unknown feature %q", path, c.Name)
			}
			fs[i] = Feature{Name: c.Name, OK: c.OK, Detail: c.Detail, Impact: in.impact, Required: in.required, Since: in.since}
		}
		return fs, nil
	}
	return nil, fmt.Errorf("kdat cache %s: no entry for %+v", path, key)
}

// readCacheFile reads the cache at path if it was written by this user and
// nobody else can have changed it.
func readCacheFile(path string) (cacheFile, error) {
	var c cacheFile
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return c, err
	}
	if st.Uid != uint32(os.Geteuid()) || st.Mode&0o022 != 0 || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return c, fmt.Errorf("kdat cache %s: owner %d, mode %#o: not ours alone", path, st.Uid, st.Mode)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("kdat cache %s: %w", path, err)
	}
	return c, nil
}

// writeCache replaces the file at path atomically (a private temporary file
// renamed over it), so that a concurrent reader sees the old file or the
// new one. No fsync, as criu: a cache lost with a crash is probed again.
func writeCache(path string, c cacheFile) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*") // mode 0600
	if err != nil {
		return err
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

func currentKey() (cacheKey, error) {
	var k cacheKey
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return k, err
	}
	k.BootID = strings.TrimSpace(string(b))
	if k.Build, err = buildID(); err != nil {
		return k, err
	}
	k.Euid = os.Geteuid()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return k, err
	}
	k.CapEff = fmt.Sprintf("%08x%08x", data[1].Effective, data[0].Effective)
	mode, _ := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	nnp, _ := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)
	k.Seccomp = fmt.Sprintf("mode %d, no_new_privs %d", mode, nnp)
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		k.Kernel = unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Version[:])
	}
	return k, nil
}

var errNoBuildID = errors.New("no Go build ID in /proc/self/exe")

// buildID reads the Go build ID note of the running binary: it changes
// with every build whose content differs, unlike a version or a VCS
// revision (a build from a modified tree keeps the revision). The Go linker
// puts the note at the start of the text, within the file's first pages
// (cmd/internal/buildid reads 32 KiB), so that is all that is read; the
// section headers are the fallback.
var buildID = sync.OnceValues(func() (string, error) {
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return "", err
	}
	defer f.Close()
	head := make([]byte, 32<<10)
	n, _ := io.ReadFull(f, head)
	if id, ok := goNote(head[:n]); ok {
		return id, nil
	}
	e, err := elf.NewFile(f)
	if err != nil {
		return "", err
	}
	s := e.Section(".note.go.buildid")
	if s == nil {
		return "", errNoBuildID
	}
	b, err := s.Data()
	if err != nil {
		return "", err
	}
	if id, ok := goNote(b); ok {
		return id, nil
	}
	return "", errNoBuildID
})

// goNote finds the ELF note "Go" of type 4 (the build ID) in b: namesz 4,
// descsz, type 4, "Go\0\0", then descsz bytes.
func goNote(b []byte) (string, bool) {
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte("\x04\x00\x00\x00Go\x00\x00"))
		if i < 0 {
			return "", false
		}
		i += off
		off = i + 1
		if i < 8 || binary.LittleEndian.Uint32(b[i-8:]) != 4 {
			continue
		}
		n := int(binary.LittleEndian.Uint32(b[i-4:]))
		if d := b[i+8:]; n > 0 && n <= len(d) && n < 1024 {
			return string(d[:n]), true
		}
	}
}

// traced tells whether this process is being ptraced (TracerPid in
// /proc/self/status).
func traced() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	_, rest, ok := strings.Cut(string(b), "\nTracerPid:")
	if !ok {
		return false
	}
	pid, _, _ := strings.Cut(rest, "\n")
	pid = strings.TrimSpace(pid)
	return pid != "" && pid != "0"
}
