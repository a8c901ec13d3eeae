package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// Helpers of the podman and containerd tests: an offline busybox image,
// a criu on $PATH, the host state the runtimes leave behind.

// counterScript is the container's command: a shell counting in memory
// into /count, so that a counter that started over shows. It waits on a
// FIFO of the image (/tick) nobody writes to, with a timeout, rather than
// in a sleep process: the container has no short-lived tasks, so no
// checkpoint catches a zombie between its exit and its reaping (which
// checkpointctl cannot inspect: a zombie has no memory images, with criu
// as with stasis).
const counterScript = "exec 9<>/tick; i=0; while true; do i=$((i+1)); echo $i > /count; read -t 0.05 -u 9 x; done"

// busyboxLayer is a tar of a root filesystem with a static busybox
// (busybox-static) and the applets the containers run.
func busyboxLayer(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(testutil.RequireTool(t, "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	hdr := func(h *tar.Header) {
		h.ModTime = now
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "dev/", "proc/", "sys/", "etc/", "tmp/", "run/"} {
		hdr(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755})
	}
	hdr(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(b))})
	if _, err := tw.Write(b); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"sh", "sleep", "cat"} {
		hdr(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + c, Linkname: "busybox", Mode: 0o777})
	}
	hdr(&tar.Header{Typeflag: tar.TypeFifo, Name: "tick", Mode: 0o600})
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ociArchive is an OCI image layout tar (what `ctr images import` takes)
// of one layer, named name in its index.
func ociArchive(t *testing.T, name string, layer []byte) []byte {
	t.Helper()
	digest := func(b []byte) string { s := sha256.Sum256(b); return "sha256:" + hex.EncodeToString(s[:]) }
	js := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	config := js(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": []string{"sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest(layer)}},
	})
	desc := func(mt string, b []byte) map[string]any {
		return map[string]any{"mediaType": mt, "digest": digest(b), "size": len(b)}
	}
	manifest := js(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": desc("application/vnd.oci.image.config.v1+json", config),
		"layers": []any{desc("application/vnd.oci.image.layer.v1.tar", layer)},
	})
	md := desc("application/vnd.oci.image.manifest.v1+json", manifest)
	md["annotations"] = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}
	md["platform"] = map[string]string{"architecture": "amd64", "os": "linux"}
	index := js(map[string]any{"schemaVersion": 2, "manifests": []any{md}})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(n string, b []byte) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: time.Now()}); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	add("index.json", index)
	for _, b := range [][]byte{layer, config, manifest} {
		add("blobs/sha256/"+strings.TrimPrefix(digest(b), "sha256:"), b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// criuDir is a directory to put first on $PATH holding `criu`: stasis
// installed with install-as-criu (criu ""), or a link to criu.
func criuDir(t *testing.T, criu string) string {
	t.Helper()
	bin := t.TempDir()
	if criu == "" {
		if r := testutil.Run(t, 10*time.Second, "install-as-criu", bin); r.Code != 0 {
			t.Fatalf("install-as-criu: %s", r)
		}
	} else if err := os.Symlink(criu, filepath.Join(bin, "criu")); err != nil {
		t.Fatal(err)
	}
	return bin
}

// criuConf is a $CRIU_CONFIG_FILE choosing the nftables network lock:
// criu's default, iptables, may lack its binary; stasis takes nftables by
// default and reads the file the same way.
func criuConf(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "criu.conf")
	if err := os.WriteFile(p, []byte("network-lock nftables\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// hostLeftovers removes at the end of the test what a runtime leaves on
// the host outside the directories it was given, where the test made it:
// paths that did not exist before, and the cgroup cg (relative to each
// hierarchy's root) in every mounted hierarchy.
func hostLeftovers(t *testing.T, cg string, paths ...string) {
	var made []string
	for _, p := range paths {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			made = append(made, p)
		}
	}
	t.Cleanup(func() {
		for _, p := range made {
			os.RemoveAll(p)
		}
		if cg != "" {
			removeCgroup(cg)
		}
	})
}

// removeCgroup removes cgroup cg and the cgroups below it, deepest first,
// in every hierarchy mounted under /sys/fs/cgroup.
func removeCgroup(cg string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, r := range roots {
		top := filepath.Join(r, cg)
		var dirs []string
		filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			os.Remove(d)
		}
	}
}

// unmountUnder unmounts what is still mounted below dir (a runtime's
// shm, a container's rootfs), deepest first, before the test's temp dirs
// are removed.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mnts []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mnts = append(mnts, f[4])
		}
	}
	sort.Slice(mnts, func(i, j int) bool { return len(mnts[i]) > len(mnts[j]) })
	for _, m := range mnts {
		exec.Command("umount", "-l", m).Run()
	}
}

// waitNoProcessMentions waits until no process has s in its command
// line (a runtime's monitor or cleanup process working in the test's
// dirs), for at most timeout.
func waitNoProcessMentions(s string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		found := false
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == strconv.Itoa(os.Getpid()) {
				continue
			}
			b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if bytes.Contains(b, []byte(s)) {
				found = true
				break
			}
		}
		if !found {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// parseCount reads a counter value written by counterScript.
func parseCount(s string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("counter %q: %w", s, err)
	}
	return n, nil
}

// runtimeVariant is one run of a runtime's flow: with stasis as criu
// (criu "") or criu 4.2, other the one that restores its export.
type runtimeVariant struct {
	name, criu, other string
	times             runtimeTimes
	export            string
}

func (v *runtimeVariant) String() string { return v.name + ": " + v.times.String() }

// runtimeTimes collects the wall times of the runtimes' checkpoints and
// restores for the test's closing log (the figures docs/runtimes.md
// gives).
type runtimeTimes map[string][]time.Duration

func (r runtimeTimes) add(what string, d time.Duration) { r[what] = append(r[what], d) }

func (r runtimeTimes) String() string {
	var keys []string
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s:", k)
		for _, d := range r[k] {
			fmt.Fprintf(&b, " %v", d.Round(time.Millisecond))
		}
		b.WriteString("; ")
	}
	return b.String()
}
