package mount

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mntimg "github.com/checkpoint-restore/go-criu/v8/crit/images/mnt"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

func TestPairs(t *testing.T) {
	m, auto, err := pairs([]string{"mnt[/ext]:EXT", "pipe:[12]", "mnt[/dev/null]:NULL"}, []string{"/data:DATA", "auto"})
	if err != nil || !auto || m["/ext"] != "EXT" || m["/dev/null"] != "NULL" || m["/data"] != "DATA" || len(m) != 3 {
		t.Fatalf("pairs = %v %v %v", m, auto, err)
	}
	for _, bad := range [][2][]string{{{"mnt[/x]"}, nil}, {{"mnt[]:K"}, nil}, {nil, {"nokey"}}, {nil, {":x"}}} {
		if _, _, err := pairs(bad[0], bad[1]); err == nil {
			t.Errorf("pairs(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestOptions(t *testing.T) {
	if f := parseMntFlags("ro,nosuid,nodev,noexec,relatime"); f != unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RELATIME {
		t.Errorf("parseMntFlags = %#x", f)
	}
	f, data := parseSbOptions("ro,size=8192k,mode=1777,sync")
	if f != unix.MS_RDONLY|unix.MS_SYNCHRONOUS || data != "size=8192k,mode=1777" {
		t.Errorf("parseSbOptions = %#x %q", f, data)
	}
	if _, data := parseSbOptions("rw"); data != "" {
		t.Errorf("rw gives data %q", data)
	}
}

func entry(id, parent uint32, mp string) *mntimg.MntEntry {
	return &mntimg.MntEntry{
		Fstype: proto.Uint32(uint32(mntimg.Fstype_TMPFS)), MntId: proto.Uint32(id), RootDev: proto.Uint32(40 + id),
		ParentMntId: proto.Uint32(parent), Flags: proto.Uint32(0), Root: proto.String("/"), Mountpoint: proto.String(mp),
		Source: proto.String("tmpfs"), Options: proto.String(""),
	}
}

// TestLoadRefuses: entries that do not form one tree below a root at /
// are refused before anything is mounted.
func TestLoadRefuses(t *testing.T) {
	for name, es := range map[string][]*mntimg.MntEntry{
		"two roots":     {entry(2, 1, "/"), entry(3, 9, "/x")},
		"not below":     {entry(2, 1, "/"), entry(3, 2, "/a"), entry(4, 3, "/b")},
		"unclean":       {entry(2, 1, "/"), entry(3, 2, "/a/../etc")},
		"relative":      {entry(2, 1, "/"), entry(3, 2, "etc")},
		"root not at /": {entry(2, 1, "/x")},
		"twice":         {entry(2, 1, "/"), entry(2, 1, "/a")},
		"root escapes":  {entry(2, 1, "/"), func() *mntimg.MntEntry { e := entry(3, 2, "/a"); e.Root = proto.String("/x/../../etc"); return e }()},
	} {
		dir, err := images.Create(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		msgs := make([]proto.Message, len(es))
		for i, e := range es {
			msgs[len(es)-1-i] = e // images list mountinfo reversed
		}
		if err := dir.Write(ImageName(7), msgs...); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir, 7); !errors.Is(err, ErrBadImage) {
			t.Errorf("%s: Load = %v, want ErrBadImage", name, err)
		}
	}
}

// TestTmpfsRoundTrip: a tree archived as criu does comes back with its
// files, modes, links, FIFO and directories.
func TestTmpfsRoundTrip(t *testing.T) {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "d/e"), 0o750))
	must(os.WriteFile(filepath.Join(src, "f"), []byte("hello"), 0o640))
	must(os.WriteFile(filepath.Join(src, "d/e/g"), []byte("deep"), 0o600))
	must(os.Symlink("f", filepath.Join(src, "l")))
	must(os.Link(filepath.Join(src, "f"), filepath.Join(src, "h")))
	must(unix.Mkfifo(filepath.Join(src, "p"), 0o600))
	dir, err := images.Create(t.TempDir())
	must(err)
	must(dumpTmpfs(dir, src, tarName(40)))
	f, err := dir.OpenRaw(tarName(40))
	must(err)
	defer f.Close()
	dst := t.TempDir()
	must(restoreTmpfs(f, dst, tarName(40)))
	if b, _ := os.ReadFile(filepath.Join(dst, "d/e/g")); string(b) != "deep" {
		t.Errorf("d/e/g = %q", b)
	}
	var a, b unix.Stat_t
	must(unix.Stat(filepath.Join(dst, "f"), &a))
	must(unix.Stat(filepath.Join(dst, "h"), &b))
	if a.Ino != b.Ino || a.Mode&0o777 != 0o640 {
		t.Errorf("f and h: inodes %d %d, mode %o", a.Ino, b.Ino, a.Mode&0o777)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "l")); l != "f" {
		t.Errorf("l -> %q", l)
	}
	if st, err := os.Stat(filepath.Join(dst, "p")); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("p: %v %v", st, err)
	}
	if st, err := os.Stat(filepath.Join(dst, "d")); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("d: %v %v", st, err)
	}
}

// TestTmpfsHostile: an archive cannot write outside the tmpfs, by name
// or through a symbolic link it made.
func TestTmpfsHostile(t *testing.T) {
	for name, hs := range map[string][]tar.Header{
		"dotdot":  {{Name: "../escape", Typeflag: tar.TypeReg, Mode: 0o644}},
		"symlink": {{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/"}, {Name: "l/escape", Typeflag: tar.TypeReg, Mode: 0o644}},
		"link":    {{Name: "h", Typeflag: tar.TypeLink, Linkname: "../../etc/passwd"}},
	} {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		for _, h := range hs {
			h := h
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
		}
		tw.Close()
		zw.Close()
		parent := t.TempDir()
		dst := filepath.Join(parent, "tmpfs")
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		err := restoreTmpfs(&buf, dst, "tmpfs-dev-1.tar.gz.img")
		if _, serr := os.Stat(filepath.Join(parent, "escape")); serr == nil {
			t.Errorf("%s: a file was made outside the tmpfs", name)
		}
		if name != "symlink" && (err == nil || !strings.Contains(err.Error(), "outside")) {
			t.Errorf("%s: restoreTmpfs = %v, want a refusal", name, err)
		}
	}
}
