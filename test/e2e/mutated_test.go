package e2e

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/checksum"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// mutatedRestores is how many damaged copies TestRestoreMutatedImages
// restores.
const mutatedRestores = 200

// mutDump is one real dump the mutations start from.
type mutDump struct {
	name  string
	dir   string
	files []string     // its *.img files
	tids  map[int]bool // every pid and tid of the tree
	comms map[string]bool
	watch []string // directories the victim uses: nothing may appear or vanish there
}

// TestRestoreMutatedImages restores 200 damaged copies of real dumps (a
// tree with pipes, one with unix sockets, a threaded process, a process
// with ghost files) with `stasis restore -d`: bytes flipped, files cut,
// entry lengths changed, entries swapped or doubled, in every image file,
// from a fixed seed. Most copies get a manifest of checksums made again, so
// that the damage reaches the decoders instead of the checksum check.
// Each restore must either succeed (its tree is then killed) or fail with
// exit 1 and an error naming an image file; never panic or hang, never
// leave a task behind (no child of ours, no task with a pid of the dumps),
// and never create or remove a file outside the copy.
func TestRestoreMutatedImages(t *testing.T) {
	testutil.RequireRoot(t)
	dumps := []*mutDump{
		mutatedDump(t, "pipe", "pipe"),
		mutatedDump(t, "unixsk", "unixsk", "all", "DIR"),
		mutatedDump(t, "threads", "threads", "8"),
		mutatedDump(t, "ghost", "ghost", "DIR", "small"),
	}
	base := t.TempDir()
	logs := t.TempDir()
	watch := append([]string{base}, "/tmp")
	for _, d := range dumps {
		watch = append(watch, d.watch...)
	}
	before := snapshotDirs(watch)
	rng := rand.New(rand.NewPCG(10, 2026))
	var ok, failed int
	messages := map[string]int{}
	start := time.Now()
	for i := 0; i < mutatedRestores; i++ {
		d := dumps[i%len(dumps)]
		file := d.files[rng.IntN(len(d.files))]
		cp := filepath.Join(base, fmt.Sprintf("%03d-%s", i, d.name))
		if err := os.Mkdir(cp, 0o700); err != nil {
			t.Fatal(err)
		}
		copyImages(t, d.dir, cp, func(os.DirEntry) bool { return true })
		what := mutate(rng, filepath.Join(cp, file))
		// One copy in four keeps the dump's manifest, which must catch the
		// damage; the others get one that matches it.
		if i%4 != 0 {
			if err := checksum.Write(cp, nil); err != nil {
				t.Fatal(err)
			}
		}
		kids := testutil.Children(os.Getpid())
		log := filepath.Join(logs, fmt.Sprintf("%03d.log", i))
		pidfile := log + ".pid"
		r := testutil.Run(t, 30*time.Second, "restore", "-D", cp, "-d", "--pidfile", pidfile, "-v4", "-o", log)
		r.Log = log
		desc := fmt.Sprintf("copy %d of %s, %s %s", i, d.name, file, what)
		switch {
		case r.Code == -1:
			t.Errorf("%s: restore hung\n%s", desc, r)
		case r.Code == 2 || strings.Contains(r.Stderr, "panic:") || strings.Contains(r.Stderr, "goroutine "):
			t.Errorf("%s: stasis crashed\n%s", desc, r)
		case r.Code == 0:
			ok++
			killRestored(d)
		case r.Code != 1 || !strings.HasPrefix(r.Stderr, "Error: "):
			t.Errorf("%s: want exit 0, or 1 with an error\n%s", desc, r)
		default:
			failed++
			msg := strings.TrimSpace(r.Stderr)
			if !strings.Contains(msg, ".img") && !strings.Contains(msg, checksum.FileName) {
				t.Errorf("%s: the error names no image file: %s", desc, msg)
			}
			messages[errorShape(msg)]++
		}
		leftBehind(t, desc, d, kids)
		if after := snapshotDirs(watch); !slices.Equal(after, before) {
			t.Errorf("%s: files outside the copy changed: %s", desc, diffLists(before, after))
			before = after
		}
		if !t.Failed() {
			os.RemoveAll(cp)
		}
	}
	t.Logf("%d restores of damaged copies in %v: %d succeeded (tree killed), %d failed with an error naming an image",
		mutatedRestores, time.Since(start).Round(time.Millisecond), ok, failed)
	shapes := make([]string, 0, len(messages))
	for m, n := range messages {
		shapes = append(shapes, fmt.Sprintf("%4d  %s", n, m))
	}
	sort.Strings(shapes)
	t.Logf("errors, by shape:\n%s", strings.Join(shapes, "\n"))
}

// mutatedDump starts victim (DIR in args becomes a temp dir of its own),
// dumps it (which kills it) and reaps its tree.
func mutatedDump(t *testing.T, name, victim string, args ...string) *mutDump {
	t.Helper()
	d := &mutDump{name: name, dir: t.TempDir(), tids: map[int]bool{}, comms: map[string]bool{}}
	for i, a := range args {
		if a == "DIR" {
			args[i] = t.TempDir()
			d.watch = append(d.watch, args[i])
		}
	}
	v := testutil.StartVictim(t, victim, args...)
	v.WaitReady(t)
	tree := testutil.MustTree(t, v.Pid)
	for _, task := range tree {
		d.comms[task.Comm] = true
	}
	dumpTree(t, v, tree, d.dir)
	for _, e := range testutil.ImageTree(t, d.dir) {
		d.tids[int(e.GetPid())] = true
		for _, tid := range e.GetThreads() {
			d.tids[int(tid)] = true
		}
	}
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".img") {
			d.files = append(d.files, e.Name())
		}
	}
	t.Logf("%s: pids %v, %d images", name, slices.Sorted(mapKeys(d.tids)), len(d.files))
	return d
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// frames returns the offset and length (size field included) of each
// entry of a framed image, as far as the framing holds together.
func frames(b []byte, hdr int) [][2]int {
	var out [][2]int
	for off := hdr; off+4 <= len(b); {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if n > len(b)-off-4 {
			break
		}
		out = append(out, [2]int{off, 4 + n})
		off += 4 + n
	}
	return out
}

// mutate damages the file at path and says how.
func mutate(rng *rand.Rand, path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return "(empty, left alone)"
	}
	hdr := 8
	if filepath.Base(path) == "inventory.img" {
		hdr = 4
	}
	raw := strings.HasPrefix(filepath.Base(path), "pages-")
	var fs [][2]int
	if !raw {
		fs = frames(b, hdr)
	}
	var what string
	switch k := rng.IntN(6); {
	case k == 0 || (k >= 3 && len(fs) == 0):
		n := 1 + rng.IntN(8)
		for j := 0; j < n; j++ {
			b[rng.IntN(len(b))] ^= byte(1 + rng.IntN(255))
		}
		what = fmt.Sprintf("with %d bytes flipped", n)
	case k == 1:
		n := rng.IntN(len(b))
		b = b[:n]
		what = fmt.Sprintf("cut to %d bytes", n)
	case k == 2:
		at := rng.IntN(len(b))
		n := min(len(b)-at, 1+rng.IntN(64))
		clear(b[at : at+n])
		what = fmt.Sprintf("with %d bytes zeroed at %d", n, at)
	case k == 3:
		f := fs[rng.IntN(len(fs))]
		old := binary.LittleEndian.Uint32(b[f[0]:])
		vals := []uint32{0, old + 1, old - 1, old * 2, 0xffffffff, 0x7ffffff0, rng.Uint32()}
		v := vals[rng.IntN(len(vals))]
		binary.LittleEndian.PutUint32(b[f[0]:], v)
		what = fmt.Sprintf("with the length at %d changed from %d to %d", f[0], old, v)
	case k == 4 && len(fs) >= 2:
		x, y := rng.IntN(len(fs)), rng.IntN(len(fs))
		if x > y {
			x, y = y, x
		}
		if x == y {
			y = (x + 1) % len(fs)
			x, y = min(x, y), max(x, y)
		}
		fx, fy := fs[x], fs[y]
		out := slices.Clone(b[:fx[0]])
		out = append(out, b[fy[0]:fy[0]+fy[1]]...)
		out = append(out, b[fx[0]+fx[1]:fy[0]]...)
		out = append(out, b[fx[0]:fx[0]+fx[1]]...)
		out = append(out, b[fy[0]+fy[1]:]...)
		b = out
		what = fmt.Sprintf("with entries %d and %d swapped", x, y)
	default:
		f := fs[rng.IntN(len(fs))]
		out := slices.Clone(b[:f[0]+f[1]])
		out = append(out, b[f[0]:f[0]+f[1]]...)
		out = append(out, b[f[0]+f[1]:]...)
		b = out
		what = fmt.Sprintf("with the entry at %d doubled", f[0])
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		panic(err)
	}
	return what
}

// killRestored kills the tree a restore made of d and reaps what was
// re-parented to the test process.
func killRestored(d *mutDump) {
	for pid := range d.tids {
		if ours(pid, d) {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		busy := false
		for pid := range d.tids {
			if ours(pid, d) {
				busy = true
				var ws unix.WaitStatus
				unix.Wait4(pid, &ws, unix.WALL|unix.WNOHANG, nil)
			}
		}
		if !busy {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ours tells whether the task holding pid is one a restore of d made: a
// child of the test process or of a task of d, or one with a comm of d. A
// task of another test that got a pid of d is neither.
func ours(pid int, d *mutDump) bool {
	st, err := testutil.ReadStat(pid)
	if err != nil {
		return false
	}
	return st.PPid == os.Getpid() || d.tids[st.PPid] || d.comms[st.Comm]
}

// leftBehind fails t if a restore left a task: a new child of the test
// process (orphans come to it, the subreaper), or a task of ours holding a
// pid of the dump. It kills and reaps what it finds.
func leftBehind(t *testing.T, desc string, d *mutDump, kids []int) {
	t.Helper()
	deadline := time.Now().Add(testutil.MinWait) // a killed tree may take seconds to go
	for {
		var stray []int
		for _, k := range testutil.Children(os.Getpid()) {
			if !slices.Contains(kids, k) {
				stray = append(stray, k)
			}
		}
		for pid := range d.tids {
			if ours(pid, d) && !slices.Contains(stray, pid) {
				stray = append(stray, pid)
			}
		}
		if len(stray) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, pid := range stray {
				st, _ := testutil.ReadStat(pid)
				tracer := ""
				if s, err := testutil.Status(pid); err == nil {
					tracer = s["TracerPid"]
				}
				t.Errorf("%s: task left behind: pid %d (comm %q, state %c, ppid %d, tracer %s)", desc, pid, st.Comm, st.State, st.PPid, tracer)
				unix.Kill(pid, unix.SIGKILL)
				var ws unix.WaitStatus
				unix.Wait4(pid, &ws, unix.WALL|unix.WNOHANG, nil)
			}
			return
		}
		for _, pid := range stray {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WALL|unix.WNOHANG, nil)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// snapshotDirs lists what is in dirs: every path under the victims' dirs
// and the copies' parent (the copies themselves excluded), and the ghost
// files stasis names NAME.cr.ID.ghost at the top of /tmp, where other
// programs come and go.
func snapshotDirs(dirs []string) []string {
	var out []string
	for _, dir := range dirs {
		if dir == "/tmp" {
			names, _ := filepath.Glob("/tmp/*.cr.*.ghost")
			out = append(out, names...)
			continue
		}
		filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if filepath.Dir(p) == dir && e.IsDir() && p != dir && isCopy(e.Name()) {
				return filepath.SkipDir // a copy: the restore may use it
			}
			out = append(out, p)
			return nil
		})
	}
	sort.Strings(out)
	return out
}

// isCopy tells a copy's directory name ("017-pipe").
func isCopy(name string) bool {
	n, _, ok := strings.Cut(name, "-")
	_, err := strconv.Atoi(n)
	return ok && err == nil
}

func diffLists(a, b []string) string {
	var d []string
	for _, x := range b {
		if !slices.Contains(a, x) {
			d = append(d, "+"+x)
		}
	}
	for _, x := range a {
		if !slices.Contains(b, x) {
			d = append(d, "-"+x)
		}
	}
	return strings.Join(d, " ")
}

// errorShape is an error message with its numbers taken out, to count
// the kinds of errors the damage gave.
func errorShape(msg string) string {
	msg = strings.TrimPrefix(strings.SplitN(msg, "\n", 2)[0], "Error: ")
	var b strings.Builder
	digits := false
	for _, c := range msg {
		if c >= '0' && c <= '9' {
			if !digits {
				b.WriteByte('N')
			}
			digits = true
			continue
		}
		digits = false
		b.WriteRune(c)
	}
	s := b.String()
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}
