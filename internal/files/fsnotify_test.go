package files

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/testutil"
)

func TestParseInotify(t *testing.T) {
	wds, err := parseInotify(anonFixture(t, "inotify.fdinfo"))
	if err != nil {
		t.Fatal(err)
	}
	if len(wds) != 3 {
		t.Fatalf("%d watches, want 3", len(wds))
	}
	for i, want := range []struct {
		wd   uint32
		ino  uint64
		mask uint32
	}{{1, 0x984098, 0x84000002}, {2, 0x984084, 0x100}, {7, 0x984097, 0x20}} {
		w := wds[i]
		if w.GetWd() != want.wd || w.GetIIno() != want.ino || w.GetMask() != want.mask || w.GetSDev() != 0xfe00000 || w.GetIgnoredMask() != 0 {
			t.Errorf("watch %d: %v, want wd %d ino %#x mask %#x sdev 0xfe00000", i, w, want.wd, want.ino, want.mask)
		}
	}
	h := wds[0].GetFHandle()
	if h.GetBytes() != 8 || h.GetType() != 1 || len(h.GetHandle()) != 16 || h.GetHandle()[0] != 0xb4ad228400984098 || h.GetHandle()[1] != 0 {
		t.Errorf("handle of wd 1: %v", h)
	}
	fhd, err := handleOf(h)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{0x98, 0x40, 0x98, 0x00, 0x84, 0x22, 0xad, 0xb4}; !bytes.Equal(fhd.Bytes(), want) || fhd.Type() != 1 {
		t.Errorf("handle decodes to type %d %x, want 1 %x", fhd.Type(), fhd.Bytes(), want)
	}

	wds, err = parseInotify(anonFixture(t, "inotify-nohandle.fdinfo"))
	if err != nil || len(wds) != 1 || wds[0].FHandle != nil {
		t.Errorf("watch on a filesystem without handles: %v, %v; want one watch with no handle", wds, err)
	}
}

func TestParseInotifyMalformed(t *testing.T) {
	const ok = "ino:1a sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:2 fhandle-type:1 f_handle:abcd"
	for _, c := range []struct{ name, line, want string }{
		{"no-wd", "inotify " + ok, "no wd"},
		{"wd-0", "inotify wd:0 " + ok, "wd 0"},
		{"wd-huge", "inotify wd:80000000 " + ok, "bad wd"},
		{"bad-hex", "inotify wd:1 ino:xyz sdev:fe00000 mask:2 ignored_mask:0", "bad ino"},
		{"no-mask", "inotify wd:1 ino:1a sdev:fe00000 ignored_mask:0", "no mask"},
		{"twice", "inotify wd:1 wd:2 " + ok, "wd twice"},
		{"stray", "inotify wd:1 junk " + ok, "stray"},
		{"odd-handle", "inotify wd:1 ino:1a sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:2 fhandle-type:1 f_handle:abc", "f_handle"},
		{"short-handle", "inotify wd:1 ino:1a sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:3 fhandle-type:1 f_handle:abcd", "f_handle"},
		{"huge-handle", "inotify wd:1 ino:1a sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:81 fhandle-type:1 f_handle:" + strings.Repeat("00", 0x81), "f_handle"},
		{"no-handle-bytes", "inotify wd:1 ino:1a sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:2 fhandle-type:1", "no f_handle"},
		{"same-wd", "inotify wd:1 " + ok + "\ninotify wd:1 " + ok, "wd 1 twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fi, err := proc.ParseFdinfo(strings.NewReader("pos:\t0\nflags:\t0\n" + c.line + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = parseInotify(fi)
			var se *proc.SyntaxError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want a syntax error naming %q", err, c.want)
			}
		})
	}
}

func TestParseFanotify(t *testing.T) {
	e, err := parseFanotify(anonFixture(t, "fanotify.fdinfo"))
	if err != nil {
		t.Fatal(err)
	}
	if e.GetFaflags() != unix.FAN_NONBLOCK || e.GetEvflags() != 0x8000 || len(e.GetMark()) != 3 {
		t.Fatalf("got %v, want flags 0x2, event flags 0x8000, 3 marks", e)
	}
	ign, mnt, ino := e.GetMark()[0], e.GetMark()[1], e.GetMark()[2]
	if ign.GetType() != fsnotify.MarkType_INODE || ign.GetMflags() != unix.FAN_MARK_IGNORED_SURV_MODIFY || ign.GetMask() != 0 ||
		ign.GetIgnoredMask() != 0x30 || ign.GetSDev() != 0x27 || ign.GetIe().GetIIno() != 3 || ign.GetIe().GetFHandle().GetBytes() != 12 {
		t.Errorf("ignore-only inode mark: %v", ign)
	}
	if mnt.GetType() != fsnotify.MarkType_MOUNT || mnt.GetMe().GetMntId() != 0x2b || mnt.GetMask() != 0x30 || mnt.Ie != nil {
		t.Errorf("mount mark: %v", mnt)
	}
	if ino.GetType() != fsnotify.MarkType_INODE || ino.GetMask() != unix.FAN_MODIFY|unix.FAN_CLOSE_WRITE || ino.GetIe().GetIIno() != 0x9842a8 {
		t.Errorf("inode mark: %v", ino)
	}

	_, err = parseFanotify(anonFixture(t, "fanotify-fs.fdinfo"))
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "FAN_MARK_FILESYSTEM") || !strings.Contains(err.Error(), "0:21") {
		t.Errorf("filesystem mark: %v, want ErrUnsupported naming FAN_MARK_FILESYSTEM on device 0:21", err)
	}
}

func TestParseFanotifyMalformed(t *testing.T) {
	const head = "fanotify flags:0 event-flags:0\n"
	for _, c := range []struct{ name, lines, want string }{
		{"no-head", "fanotify mnt_id:1b mflags:0 mask:20 ignored_mask:0\n", "no \"fanotify flags:\" line"},
		{"two-heads", head + head, "flags twice"},
		{"bad-flags", "fanotify flags:zz event-flags:0\n", "bad flags"},
		{"no-mask", head + "fanotify mnt_id:1b mflags:0 ignored_mask:0\n", "no mask"},
		{"no-sdev", head + "fanotify ino:3 mflags:0 mask:2 ignored_mask:0\n", "no sdev"},
		{"bad-handle", head + "fanotify ino:3 sdev:1 mflags:0 mask:2 ignored_mask:0 fhandle-bytes:1 fhandle-type:1 f_handle:zz\n", "f_handle"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fi, err := proc.ParseFdinfo(strings.NewReader("pos:\t0\nflags:\t0\n" + c.lines))
			if err != nil {
				t.Fatal(err)
			}
			_, err = parseFanotify(fi)
			var se *proc.SyntaxError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want a syntax error naming %q", err, c.want)
			}
		})
	}
	fi, _ := proc.ParseFdinfo(strings.NewReader("pos:\t0\nflags:\t0\n" + head + "fanotify mnt_ns:5 mflags:0 mask:2 ignored_mask:0\n"))
	if _, err := parseFanotify(fi); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "unknown kind") {
		t.Errorf("mark of an unknown kind: %v, want ErrUnsupported", err)
	}
}

// selfFd is fd of this process as DumpFds sees it.
func selfFd(t *testing.T, fd int) *Fd {
	t.Helper()
	f := &Fd{Pid: os.Getpid(), Num: fd, Info: anonSelf(t, fd), ID: 9}
	var err error
	if f.Target, err = os.Readlink(f.Path()); err != nil {
		t.Fatal(err)
	}
	return f
}

// fdCount counts this process' open fds, to find leaks.
func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestInotifyRoundTrip dumps an inotify fd of this process and opens the
// entry again: the new fd has the same watches (wd, inode, mask, with gaps
// in the wds) and flags, and reports events with the old wds.
func TestInotifyRoundTrip(t *testing.T) {
	testutil.RequireRoot(t) // open_by_handle_at needs CAP_DAC_READ_SEARCH
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	anonClose(t, fd)
	gap, _ := unix.InotifyAddWatch(fd, dir, unix.IN_ACCESS)
	wa, _ := unix.InotifyAddWatch(fd, a, unix.IN_MODIFY|unix.IN_EXCL_UNLINK)
	unix.InotifyRmWatch(fd, uint32(gap))
	wb, _ := unix.InotifyAddWatch(fd, b, unix.IN_ATTRIB|unix.IN_ONESHOT)
	if wa != 2 || wb != 3 {
		t.Fatalf("wds %d %d, want 2 3", wa, wb)
	}
	fe, err := dumpInotify(nil, selfFd(t, fd))
	if err != nil {
		t.Fatal(err)
	}
	anonMarshals(t, fe)
	if got := fe.GetIfy().GetWd()[0].GetFHandle().GetPath(); got != a {
		t.Errorf("path of wd 2 is %q, want %q", got, a)
	}
	f, err := openInotify(nil, fe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nfd := int(f.Fd())
	if anonGetfl(t, nfd)&unix.O_NONBLOCK == 0 {
		t.Error("O_NONBLOCK lost")
	}
	want, _ := parseInotify(anonSelf(t, fd))
	got, err := parseInotify(anonSelf(t, nfd))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d watches, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("watch %d: %v, want %v", i, got[i], want[i])
		}
	}
	if err := os.WriteFile(a, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := unix.Read(nfd, buf)
	if err != nil || n < unix.SizeofInotifyEvent {
		t.Fatalf("read: %d, %v", n, err)
	}
	if wd, mask := int32(binary.NativeEndian.Uint32(buf[0:])), binary.NativeEndian.Uint32(buf[4:]); wd != 2 || mask != unix.IN_MODIFY {
		t.Errorf("event wd %d mask %#x, want wd 2 IN_MODIFY", wd, mask)
	}
}

// TestFanotifyRoundTrip: a fanotify group with an inode mark and an
// ignore-only mark comes back with the same flags and marks.
func TestFanotifyRoundTrip(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_LARGEFILE)
	if err != nil {
		t.Fatal(err)
	}
	anonClose(t, fd)
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD, unix.FAN_MODIFY|unix.FAN_CLOSE_WRITE, unix.AT_FDCWD, a); err != nil {
		t.Fatal(err)
	}
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_IGNORED_MASK|unix.FAN_MARK_IGNORED_SURV_MODIFY, unix.FAN_OPEN, unix.AT_FDCWD, b); err != nil {
		t.Fatal(err)
	}
	fe, err := dumpFanotify(nil, selfFd(t, fd))
	if err != nil {
		t.Fatal(err)
	}
	anonMarshals(t, fe)
	f, err := openFanotify(nil, fe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, _ := parseFanotify(anonSelf(t, fd))
	got, err := parseFanotify(anonSelf(t, int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("reopened group %v, want %v", got, want)
	}
	if anonGetfl(t, int(f.Fd()))&unix.O_NONBLOCK == 0 {
		t.Error("O_NONBLOCK lost")
	}
}

// TestOpenFsnotifyBadEntries: a damaged entry is refused with an error
// naming the watch or mark, and leaves no fd behind.
func TestOpenFsnotifyBadEntries(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	if err := os.WriteFile(a, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	anonClose(t, ifd)
	unix.InotifyAddWatch(ifd, a, unix.IN_MODIFY)
	good, err := dumpInotify(nil, selfFd(t, ifd))
	if err != nil {
		t.Fatal(err)
	}
	wdWith := func(change func(w *fsnotify.InotifyWdEntry)) *fdinfo.FileEntry {
		fe := proto.Clone(good).(*fdinfo.FileEntry)
		change(fe.GetIfy().GetWd()[0])
		return fe
	}
	for _, c := range []struct {
		name string
		fe   *fdinfo.FileEntry
		want string
		is   error
	}{
		{"wd-0", wdWith(func(w *fsnotify.InotifyWdEntry) { w.Wd = proto.Uint32(0) }), "wd 0", images.ErrCorrupt},
		{"wd-huge", wdWith(func(w *fsnotify.InotifyWdEntry) { w.Wd = proto.Uint32(math.MaxInt32 + 1) }), "wd 2147483648", images.ErrCorrupt},
		{"no-handle", wdWith(func(w *fsnotify.InotifyWdEntry) { w.FHandle = nil }), "no file handle", images.ErrCorrupt},
		{"bad-handle", wdWith(func(w *fsnotify.InotifyWdEntry) { w.FHandle.Bytes = proto.Uint32(200) }), "200 bytes", images.ErrCorrupt},
		{"gone", wdWith(func(w *fsnotify.InotifyWdEntry) {
			w.FHandle.Handle[0] ^= 0xffffffff // another inode, or none
			w.FHandle.Path = proto.String(filepath.Join(dir, "nothing"))
		}), "nothing", nil},
		{"not-inotify", &fdinfo.FileEntry{Id: proto.Uint32(3), Type: fdinfo.FdTypes_INOTIFY.Enum()}, "not an inotify", images.ErrCorrupt},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := fdCount(t)
			f, err := openInotify(nil, c.fe)
			if err == nil {
				f.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), c.want) || (c.is != nil && !errors.Is(err, c.is)) {
				t.Errorf("got %v, want an error naming %q (%v)", err, c.want, c.is)
			}
			if n := fdCount(t); n != before {
				t.Errorf("%d fds open after the failure, %d before", n, before)
			}
		})
	}

	mark := func(m *fsnotify.FanotifyMarkEntry) *fdinfo.FileEntry {
		return &fdinfo.FileEntry{Id: proto.Uint32(4), Type: fdinfo.FdTypes_FANOTIFY.Enum(), Ffy: &fsnotify.FanotifyFileEntry{
			Id: proto.Uint32(4), Flags: proto.Uint32(0), Fown: AnonFown(), Faflags: proto.Uint32(0), Evflags: proto.Uint32(0),
			Mark: []*fsnotify.FanotifyMarkEntry{m}}}
	}
	base := func() *fsnotify.FanotifyMarkEntry {
		return &fsnotify.FanotifyMarkEntry{Id: proto.Uint32(4), Type: fsnotify.MarkType_MOUNT.Enum(), Mflags: proto.Uint32(0),
			Mask: proto.Uint32(unix.FAN_OPEN), IgnoredMask: proto.Uint32(0), SDev: proto.Uint32(0),
			Me: &fsnotify.FanotifyMountMarkEntry{MntId: proto.Uint32(1), Path: proto.String(dir)}}
	}
	notMount, perm, flags, noHandle := base(), base(), base(), base()
	perm.Mask = proto.Uint32(unix.FAN_OPEN_PERM)
	flags.Mflags = proto.Uint32(unix.FAN_MARK_MOUNT)
	noHandle.Type, noHandle.Me, noHandle.Ie = fsnotify.MarkType_INODE.Enum(), nil, &fsnotify.FanotifyInodeMarkEntry{IIno: proto.Uint64(1)}
	for _, c := range []struct {
		name string
		m    *fsnotify.FanotifyMarkEntry
		want string
	}{
		{"not-a-mount", notMount, "not a mount point"},
		{"perm", perm, "permission events"},
		{"flags", flags, "mark flags"},
		{"no-handle", noHandle, "without a file handle"},
	} {
		t.Run("fanotify-"+c.name, func(t *testing.T) {
			before := fdCount(t)
			f, err := openFanotify(nil, mark(c.m))
			if err == nil {
				f.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "file id 4") {
				t.Errorf("got %v, want an error naming file id 4 and %q", err, c.want)
			}
			if n := fdCount(t); n != before {
				t.Errorf("%d fds open after the failure, %d before", n, before)
			}
		})
	}
}

func TestHandleOfCorrupt(t *testing.T) {
	for _, e := range []*fh.FhEntry{
		{Bytes: proto.Uint32(0), Type: proto.Uint32(1)},
		{Bytes: proto.Uint32(129), Type: proto.Uint32(1), Handle: make([]uint64, 17)},
		{Bytes: proto.Uint32(16), Type: proto.Uint32(1), Handle: make([]uint64, 1)},
	} {
		if _, err := handleOf(e); !errors.Is(err, images.ErrCorrupt) {
			t.Errorf("handle %v: %v, want ErrCorrupt", e, err)
		}
	}
}
