package files

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/regfile"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// TestCheckPaths: every kind of entry that carries a path is checked:
// regular files (and so FIFOs and ghosts), unix socket bind paths and
// their directory, inotify watches, fanotify inode and mount marks.
func TestCheckPaths(t *testing.T) {
	reg := func(name string) *fdinfo.FileEntry {
		return &fdinfo.FileEntry{Id: proto.Uint32(1), Reg: &regfile.RegFileEntry{Name: proto.String(name)}}
	}
	usk := func(name, dir string) *fdinfo.FileEntry {
		ue := &sk_unix.UnixSkEntry{Name: []byte(name)}
		if dir != "" {
			ue.NameDir = proto.String(dir)
		}
		return &fdinfo.FileEntry{Id: proto.Uint32(2), Usk: ue}
	}
	ify := func(p string) *fdinfo.FileEntry {
		return &fdinfo.FileEntry{Id: proto.Uint32(3), Ify: &fsnotify.InotifyFileEntry{
			Wd: []*fsnotify.InotifyWdEntry{{FHandle: &fh.FhEntry{Path: proto.String(p)}}}}}
	}
	fmark := func(p string) *fdinfo.FileEntry {
		return &fdinfo.FileEntry{Id: proto.Uint32(4), Ffy: &fsnotify.FanotifyFileEntry{
			Mark: []*fsnotify.FanotifyMarkEntry{{Me: &fsnotify.FanotifyMountMarkEntry{Path: proto.String(p)}}}}}
	}
	for _, c := range []struct {
		name string
		fe   *fdinfo.FileEntry
		ok   bool
	}{
		{"reg", reg("/tmp/a"), true},
		{"reg-dotdot", reg("/tmp/../../etc/shadow"), false},
		{"reg-relative", reg("etc/shadow"), false},
		{"unix-abs", usk("/run/a.sock\x00", ""), true},
		{"unix-abstract", usk("\x00anything/../x", ""), true},
		{"unix-rel", usk("a.sock", "/run"), true},
		{"unix-rel-no-dir", usk("a.sock", ""), false},
		{"unix-rel-dotdot", usk("../a.sock", "/run"), false},
		{"unix-dir-relative", usk("a.sock", "run"), false},
		{"unix-dotdot", usk("/run/../../a.sock", ""), false},
		{"inotify", ify("/etc"), true},
		{"inotify-dotdot", ify("/etc/../../x"), false},
		{"fanotify-mount", fmark("mnt/data"), true},
		{"fanotify-mount-dotdot", fmark("mnt/../../x"), false},
	} {
		err := CheckPaths(c.fe)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, images.ErrUnsafePath)) {
			t.Errorf("%s: CheckPaths = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

// TestCreateDirOK: a file to be created in a directory reached through a
// symbolic link is refused; a real directory, or one that is missing
// (for the caller to make or report), is not.
func TestCreateDirOK(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	if err := CreateDirOK(filepath.Join(real, "f")); err != nil {
		t.Errorf("real dir: %v", err)
	}
	if err := CreateDirOK(filepath.Join(base, "link", "f")); !errors.Is(err, images.ErrUnsafePath) {
		t.Errorf("through a link: %v, want ErrUnsafePath", err)
	}
	if err := CreateDirOK(filepath.Join(base, "link", "sub", "f")); !errors.Is(err, images.ErrUnsafePath) {
		t.Errorf("below a link: %v, want ErrUnsafePath", err)
	}
	if err := CreateDirOK(filepath.Join(base, "missing", "f")); err == nil || errors.Is(err, images.ErrUnsafePath) {
		t.Errorf("missing dir: %v, want a plain error", err)
	}
}
