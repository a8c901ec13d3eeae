package testutil

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	"github.com/checkpoint-restore/go-criu/v8/magic"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/stasis-cr/stasis/internal/testutil/require"
)

// critPython is the interpreter crit 4.2 runs with: Debian's, which has
// python3-protobuf (a python3 earlier on PATH, pyenv's, may not).
const critPython = "/usr/bin/python3"

var crit42 struct {
	once sync.Once
	path string
	err  error
}

// Crit42 returns a crit 4.2 that works, built once per test-binary run from
// the one beside the CRIU reference. That one is shipped without the modules
// criu's build generates (its README): the *_pb2.py of criu's images/*.proto,
// pb.py, magic.py, rpc_pb2.py and version.py. They are made here the way
// criu's lib/pycriu Makefiles make them, with protoc from the .proto files
// of go-criu v8 (the module stasis reads images with), which are criu 4.2's
// own: the same text, core.proto and sa.proto renamed criu-core.proto and
// criu-sa.proto, renamed back here. Without protoc (Debian
// protobuf-compiler) or python3-protobuf the test skips, or fails under CI.
func Crit42(t testing.TB) string {
	t.Helper()
	crit42.once.Do(func() { crit42.path, crit42.err = buildCrit42() })
	if crit42.err != nil {
		SkipOrFail(t, "crit 4.2 cannot be made to work: %v", crit42.err)
	}
	return crit42.path
}

func buildCrit42() (string, error) {
	ref, err := require.CRIUReference()
	if err != nil {
		return "", err
	}
	src := filepath.Dir(ref)
	protoc, err := require.LookTool("protoc")
	if err != nil {
		return "", fmt.Errorf("%w (Debian package protobuf-compiler; .ci/run installs it)", err)
	}
	if out, err := exec.Command(critPython, "-c", "import google.protobuf").CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s has no google.protobuf (Debian package python3-protobuf; .ci/run installs it): %w\n%s", critPython, err, out)
	}
	gocriu, err := goCriuDir()
	if err != nil {
		return "", err
	}
	buildMu.Lock()
	tmp, err := buildTmp()
	buildMu.Unlock()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(tmp, "crit-4.2")
	for _, sub := range []string{"lib", "crit"} {
		if err := copyTree(filepath.Join(src, sub), filepath.Join(dir, sub)); err != nil {
			return "", fmt.Errorf("copy crit 4.2 from %s: %w", src, err)
		}
	}
	pycriu := filepath.Join(dir, "lib", "pycriu")

	// The proto files under their criu names, and the descriptor of
	// google/protobuf/descriptor.proto that opts.proto imports (its source
	// is in libprotobuf-dev, which protoc does not need otherwise).
	protoDir := filepath.Join(dir, "proto")
	rpcDir := filepath.Join(dir, "proto-rpc")
	for _, d := range []string{protoDir, rpcDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	rename := map[string]string{"criu-core.proto": "core.proto", "criu-sa.proto": "sa.proto"}
	all, err := filepath.Glob(filepath.Join(gocriu, "crit", "images", "*.proto"))
	if err != nil || len(all) == 0 {
		return "", fmt.Errorf("no .proto files in %s/crit/images (%v)", gocriu, err)
	}
	var protos []string
	for _, p := range all {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		text := string(b)
		for from, to := range rename {
			text = strings.ReplaceAll(text, `import "`+from+`"`, `import "`+to+`"`)
		}
		name := filepath.Base(p)
		if n, ok := rename[name]; ok {
			name = n
		}
		if err := os.WriteFile(filepath.Join(protoDir, name), []byte(text), 0o644); err != nil {
			return "", err
		}
		protos = append(protos, name)
	}
	sort.Strings(protos)
	rpc, err := os.ReadFile(filepath.Join(gocriu, "rpc", "rpc.proto"))
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(rpcDir, "rpc.proto"), rpc, 0o644); err != nil {
		return "", err
	}
	descSet := filepath.Join(dir, "descriptor.pb")
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(descriptorpb.File_google_protobuf_descriptor_proto)}})
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(descSet, b, 0o644); err != nil {
		return "", err
	}

	run := func(args ...string) error {
		cmd := exec.Command(protoc, append([]string{"--descriptor_set_in=" + descSet}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("protoc %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run(append([]string{"-I=" + protoDir, "--python_out=" + filepath.Join(pycriu, "images")}, protos...)...); err != nil {
		return "", err
	}
	if err := run("-I="+rpcDir, "--python_out="+pycriu, "rpc.proto"); err != nil {
		return "", err
	}

	// pb.py imports every message module but opts (lib/pycriu/images/Makefile).
	var pb strings.Builder
	pb.WriteString("# Autogenerated. Do not edit!\n")
	for _, p := range protos {
		if m := strings.ReplaceAll(strings.TrimSuffix(p, ".proto"), "-", "_") + "_pb2"; m != "opts_pb2" {
			fmt.Fprintf(&pb, "from .%s import *\n", m)
		}
	}
	// magic.py: criu's magic.h without the _MAGIC suffixes (scripts/magic-gen.py).
	var mg strings.Builder
	mg.WriteString("#Autogenerated. Do not edit!\nby_name = {}\nby_val = {}\n")
	mm := magic.LoadMagic().ByName
	// go-criu v8.3.0's table lacks this one magic of criu 4.2's magic.h.
	mm["PIDFD"] = 0x54435556
	names := make([]string, 0, len(mm))
	for n := range mm {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&mg, "by_name['%s'] = %d\nby_val[%d] = '%s'\n", n, mm[n], mm[n], n)
	}
	wrapper := filepath.Join(dir, "crit-4.2")
	files := map[string]string{
		filepath.Join(pycriu, "images", "pb.py"):    pb.String(),
		filepath.Join(pycriu, "images", "magic.py"): mg.String(),
		filepath.Join(pycriu, "version.py"):         "__version__ = '4.2'\n",
		wrapper: "#!/bin/sh\n# crit 4.2 with the modules its build generates (testutil.Crit42).\n" +
			"d=$(cd \"$(dirname \"$0\")\" && pwd)\n" +
			"PYTHONPATH=\"$d/lib:$d/crit\" exec " + critPython + " -m crit \"$@\"\n",
	}
	for p, text := range files {
		if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
			return "", err
		}
	}
	out, err := exec.Command(wrapper, "--version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "4.2" {
		return "", fmt.Errorf("%s --version: %v: %s", wrapper, err, out)
	}
	return wrapper, nil
}

// goCriuDir is where the go module cache holds go-criu v8.
func goCriuDir() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/checkpoint-restore/go-criu/v8")
	cmd.Dir = ModuleRoot()
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = fmt.Errorf("%w: %s", err, ee.Stderr)
	}
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		return "", fmt.Errorf("go list -m go-criu/v8 (its .proto files): %v", err)
	}
	return dir, nil
}

// copyTree copies the regular files under src to dst, without caches.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "__pycache__" {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
}

// critDriver runs crit 4.2's own decode, encode and explore
// (crit/__main__.py) over a dump in one python (crit's start costs 0.4 s):
// `driver OUT DIR F...` runs, for each image F, `crit decode -i F -o
// OUT/F.json`, `crit encode -i OUT/F.json -o OUT/F.back` and `crit show
// F` (decode --pretty) into OUT/F.show, then `crit x DIR WHAT` for each
// explorer into OUT/x-WHAT. It prints {F: {"roundtrip": error, "show":
// error}, "x WHAT": error}, "" for none.
const critDriver = `import contextlib, io, json, os, sys, traceback
from crit.__main__ import decode, encode, explore

def run(fn, opts):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            fn(opts)
        return ""
    except SystemExit as e:
        return "exit %s: %s" % (e.code, err.getvalue().strip())
    except Exception:
        return traceback.format_exc(limit=4) + err.getvalue()

out, d, res = sys.argv[1], sys.argv[2], {}
for f in sys.argv[3:]:
    base = os.path.join(out, os.path.basename(f))
    rt = run(decode, {'in': f, 'out': base + '.json', 'pretty': False, 'nopl': False})
    if not rt:
        rt = run(encode, {'in': base + '.json', 'out': base + '.back'})
    show = run(decode, {'in': f, 'out': base + '.show', 'pretty': True, 'nopl': False})
    res[f] = {'roundtrip': rt, 'show': show}
for w in ('ps', 'fds', 'mems', 'rss'):
    with open(os.path.join(out, 'x-' + w), 'w') as o, contextlib.redirect_stdout(o):
        res['x ' + w] = run(explore, {'dir': d, 'what': w})
json.dump(res, sys.stdout)
`

// critRaw are the images of a dump that have no header nor entries (criu
// writes them raw and crit refuses them: "raw data"), and the stasis
// extras criu ignores: they are not decoded.
var critRaw = []string{"pages-*.img", "ifaddr-*.img", "route-*.img", "route6-*.img", "rule-*.img",
	"iptables-*.img", "ip6tables-*.img", "nftables-*.img", "netns-ct-*.img", "netns-exp-*.img",
	"tmpfs-*.tar.gz", "tmpfs-dev-*.tar.gz", "stasis-checksums.json"}

// CritFiles lists the files of a dump that crit decodes: every regular
// file but those of critRaw.
func CritFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
next:
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		for _, pat := range critRaw {
			if ok, _ := filepath.Match(pat, e.Name()); ok {
				continue next
			}
		}
		out = append(out, filepath.Join(dir, e.Name()))
	}
	if len(out) == 0 {
		t.Fatalf("no images in %s", dir)
	}
	return out
}

// CheckWithCrit42 decodes every image of dir (CritFiles) with crit 4.2,
// encodes the JSON back and fails unless the bytes are the image's, and
// compares what `crit show` prints with what `stasis show` prints; crit's
// explorers (`crit x DIR ps|fds|mems|rss`) must read the dump too. It
// returns the number of images decoded and of those re-encoded identical.
func CheckWithCrit42(t testing.TB, dir string) (checked, identical int) {
	t.Helper()
	crit := Crit42(t)
	var files []string
	for _, f := range CritFiles(t, dir) {
		if why := critCannot(t, f); why != "" {
			t.Logf("%s not checked with crit 4.2: %s", filepath.Base(f), why)
			continue
		}
		files = append(files, f)
	}
	out := t.TempDir()
	driver := filepath.Join(out, "roundtrip.py")
	if err := os.WriteFile(driver, []byte(critDriver), 0o644); err != nil {
		t.Fatal(err)
	}
	critDir := filepath.Dir(crit)
	cmd := exec.Command(critPython, append([]string{driver, out, dir}, files...)...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join(critDir, "lib")+":"+filepath.Join(critDir, "crit"))
	var errb strings.Builder
	cmd.Stderr = &errb
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("crit 4.2 over %s: %v\n%s", dir, err, errb.String())
	}
	var res map[string]json.RawMessage
	if err := json.Unmarshal(stdout, &res); err != nil {
		t.Fatalf("crit 4.2 over %s: %v\n%s", dir, err, stdout)
	}
	for _, w := range []string{"ps", "fds", "mems", "rss"} {
		var msg string
		json.Unmarshal(res["x "+w], &msg)
		x, _ := os.ReadFile(filepath.Join(out, "x-"+w))
		if m := critZombie.FindStringSubmatch(msg); m != nil && zombieOf(dir, m[2]) {
			// A zombie has a core image only (criu's dumps too), which
			// crit's explorers do not expect.
			t.Logf("crit 4.2 x %s cannot read a dump with a zombie (pid %s has no %s-%s.img), criu's own neither", w, m[2], m[1], m[2])
			continue
		}
		if msg != "" || len(x) == 0 {
			t.Errorf("crit 4.2 x %s %s: %s%s", dir, w, msg, x)
		}
	}
	for _, f := range files {
		name := filepath.Base(f)
		var r struct{ Roundtrip, Show string }
		if err := json.Unmarshal(res[f], &r); err != nil {
			t.Errorf("crit 4.2: no result for %s: %v", name, err)
			continue
		}
		base := filepath.Join(out, name)
		if r.Roundtrip != "" {
			t.Errorf("crit 4.2 decode/encode %s: %s", name, r.Roundtrip)
		} else {
			checked++
			orig, err1 := os.ReadFile(f)
			back, err2 := os.ReadFile(base + ".back")
			if err := errors.Join(err1, err2); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(orig, back); i >= 0 {
				t.Errorf("crit 4.2 decode | encode of %s differs from it at byte %d of %d (re-encoded %d bytes): %s",
					name, i, len(orig), len(back), critHexAround(orig, back, i))
			} else {
				identical++
			}
		}
		if r.Show != "" {
			t.Errorf("crit 4.2 show %s: %s", name, r.Show)
			continue
		}
		theirs, err := os.ReadFile(base + ".show")
		if err != nil {
			t.Fatal(err)
		}
		compareShow(t, f, theirs)
	}
	critPipe(t, crit, files)
	return checked, identical
}

// critPipe runs the command line `crit decode -i F | crit encode` for one
// image of files (a core image, the richest), as a user would, and fails
// unless it gives back F's bytes: the driver calls the same functions.
func critPipe(t testing.TB, crit string, files []string) {
	t.Helper()
	f := files[0]
	for _, c := range files {
		if strings.HasPrefix(filepath.Base(c), "core-") {
			f = c
			break
		}
	}
	dec := exec.Command(crit, "decode", "-i", f)
	enc := exec.Command(crit, "encode")
	pipe, err := dec.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	enc.Stdin = pipe
	var derr, eerr strings.Builder
	dec.Stderr, enc.Stderr = &derr, &eerr
	if err := dec.Start(); err != nil {
		t.Fatal(err)
	}
	back, err := enc.Output()
	if werr := dec.Wait(); werr != nil || err != nil {
		t.Errorf("crit decode -i %s | crit encode: %v, %v\n%s%s", filepath.Base(f), werr, err, derr.String(), eerr.String())
		return
	}
	orig, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(orig, back); i >= 0 {
		t.Errorf("crit decode -i %s | crit encode differs at byte %d: %s", filepath.Base(f), i, critHexAround(orig, back, i))
	}
}

// critCannot says why crit 4.2 cannot decode an image that criu 4.2
// writes the same way, "" if it can: an ipcns-shm entry with in_pagemaps
// (criu 4.2 always sets it; its contents are in pagemap-shmem) is followed
// by no data, but crit reads size bytes of data after it all the same.
func critCannot(t testing.TB, f string) string {
	t.Helper()
	if !strings.HasPrefix(filepath.Base(f), "ipcns-shm-") {
		return ""
	}
	for _, e := range ReadImage(t, filepath.Dir(f), filepath.Base(f), func() *ipc_shm.IpcShmEntry { return &ipc_shm.IpcShmEntry{} }) {
		if e.GetInPagemaps() {
			return "crit reads inline data after an entry with in_pagemaps (criu 4.2's own images too)"
		}
	}
	return ""
}

// critZombie matches crit's error for the missing images of a zombie.
var critZombie = regexp.MustCompile(`No such file or directory: '[^']*/(ids|mm)-([0-9]+)\.img'`)

// zombieOf reports whether pid has the images of a zombie in dir: a core
// image and no mm image.
func zombieOf(dir, pid string) bool {
	_, cerr := os.Stat(filepath.Join(dir, "core-"+pid+".img"))
	_, merr := os.Stat(filepath.Join(dir, "mm-"+pid+".img"))
	return cerr == nil && errors.Is(merr, os.ErrNotExist)
}

// firstDiff is the offset of the first byte where a and b differ, -1 if
// they are equal.
func firstDiff(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func critHexAround(a, b []byte, i int) string {
	lo := max(i-8, 0)
	return fmt.Sprintf("image % x, crit % x", a[lo:min(i+16, len(a))], b[lo:min(i+16, len(b))])
}
