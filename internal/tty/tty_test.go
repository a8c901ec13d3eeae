package tty

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/tty"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"

	"github.com/stasis-cr/stasis/internal/testutil"
)

func TestTtyDeviceNumbers(t *testing.T) {
	for _, c := range []struct {
		index      int
		maj, minor uint32
	}{{0, 136, 0}, {255, 136, 255}, {256, 137, 0}, {999, 139, 231}} {
		rdev := ptsRdev(c.index)
		if unix.Major(rdev) != c.maj || unix.Minor(rdev) != c.minor {
			t.Errorf("ptsRdev(%d) = %d:%d, want %d:%d", c.index, unix.Major(rdev), unix.Minor(rdev), c.maj, c.minor)
		}
		if !isTty(rdev) {
			t.Errorf("isTty(/dev/pts/%d) = false", c.index)
		}
	}
	for _, c := range []struct {
		maj, minor uint32
		want       bool
	}{{5, 0, true}, {5, 1, true}, {5, 2, true}, {4, 1, true}, {143, 0, true}, {144, 0, false}, {1, 3, false}, {10, 200, false}} {
		if got := isTty(unix.Mkdev(c.maj, c.minor)); got != c.want {
			t.Errorf("isTty(%d:%d) = %v, want %v", c.maj, c.minor, got, c.want)
		}
	}
	// criu's key of an external terminal: tty[rdev:dev], hex.
	if k := ExternalTtyKey(unix.Mkdev(136, 3), 0x19); k != "tty[8803:19]" {
		t.Errorf("ExternalTtyKey = %q", k)
	}
}

func TestTermiosEntry(t *testing.T) {
	in := &unix.Termios{Iflag: 1, Oflag: 2, Cflag: 3, Lflag: 4, Line: 5, Ispeed: 6, Ospeed: 7}
	for i := range in.Cc {
		in.Cc[i] = uint8(i + 10)
	}
	e := termiosEntry(in)
	out, known, err := termiosOf(e)
	if err != nil {
		t.Fatal(err)
	}
	if *out != *in || known != len(in.Cc) {
		t.Errorf("termios %+v came back as %+v (%d control characters known)", in, out, known)
	}
	// criu reads the first 8 bytes packed in words 0 and 1.
	if e.CCc[0] != 0x0d0c0b0a || e.CCc[1] != 0x11100f0e {
		t.Errorf("c_cc words 0, 1 = %#x %#x, want criu's packing", e.CCc[0], e.CCc[1])
	}
	// criu's own image: 8 bytes packed, then what was in its memory.
	criu := &tty.TermiosEntry{CCc: []uint32{0x15081c07, 0x00010004, 0, 0, 0, 0, 0, 0, 2093442064, 21896, 49, 0, 2201951424, 32603, 2093443456, 21896, 2093442096, 21896, 2093442096}}
	out, known, err = termiosOf(criu)
	if err != nil || known != 8 || out.Cc[unix.VINTR] != 7 || out.Cc[unix.VERASE] != 8 || out.Cc[unix.VMIN] != 1 {
		t.Errorf("criu's termios: %v, %d known, %v", out.Cc, known, err)
	}
	// stasis' images before criu's format: one byte per word.
	old := &tty.TermiosEntry{CCc: make([]uint32, 19)}
	for i := range old.CCc {
		old.CCc[i] = uint32(i + 10)
	}
	if out, known, err = termiosOf(old); err != nil || known != 19 || out.Cc != in.Cc {
		t.Errorf("one byte per word: %v, %d known, %v", out.Cc, known, err)
	}
	e.CCc = e.CCc[:3]
	_, _, err = termiosOf(e)
	if !errors.Is(err, images.ErrCorrupt) || !strings.Contains(err.Error(), "termios with 3 control characters") {
		t.Errorf("a short termios: %v", err)
	}
}

// openPty opens a pty pair in the test process.
func openPty(t *testing.T) (master, slave, index int) {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		testutil.SkipOrFail(t, "no pty: %v", err)
	}
	t.Cleanup(func() { unix.Close(m) })
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		t.Fatal(errno)
	}
	t.Cleanup(func() { unix.Close(int(s)) })
	return m, int(s), n
}

// ttyDumpOf dumps fds of the test process into a new image dir.
func ttyDumpOf(t *testing.T, opts files.DumpOptions, fds ...int) (*files.Table, *images.Dir, error) {
	t.Helper()
	tab := files.NewTable(opts, func() int { return 1 })
	for _, fd := range fds {
		if _, err := tab.DumpFd(os.Getpid(), fd); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// As the dump does: the tree's checks, then the images.
	if err = tab.CheckTree(); err == nil {
		err = tab.WriteImages(dir)
	}
	return tab, dir, err
}

// TestTtyDumpPair: both sides of a pty pair are dumped with their index,
// termios, window size and the bytes pending both ways; as the tree goes
// on (-R), those bytes are there again, in order.
func TestTtyDumpPair(t *testing.T) {
	m, s, index := openPty(t)
	tio, err := unix.IoctlGetTermios(s, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Lflag &^= unix.ECHO
	tio.Cc[unix.VINTR] = 7
	if err := unix.IoctlSetTermios(s, unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(s, unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 77}); err != nil {
		t.Fatal(err)
	}
	if err := linux.WriteAll(m, []byte("typed line\npartial")); err != nil {
		t.Fatal(err)
	}
	if err := linux.WriteAll(s, []byte("output")); err != nil {
		t.Fatal(err)
	}
	tab, dir, err := ttyDumpOf(t, files.DumpOptions{}, m, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := tab.Finish(false); err != nil {
		t.Fatal(err)
	}
	infos, err := images.ReadAll(dir, "tty-info.img", func() *tty.TtyInfoEntry { return &tty.TtyInfoEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	byID := map[uint32]*tty.TtyInfoEntry{}
	for _, e := range infos {
		byID[e.GetId()] = e
	}
	sl, ms := byID[uint32(index)<<1], byID[uint32(index)<<1|1]
	if sl == nil || ms == nil || len(infos) != 2 {
		t.Fatalf("tty-info.img has %v, want the slave and master of pty %d", infos, index)
	}
	if sl.GetPty().GetIndex() != uint32(index) || sl.GetType() != tty.TtyType_PTY {
		t.Errorf("slave info %v", sl)
	}
	if sl.GetWinsize().GetWsRow() != 33 || sl.GetWinsize().GetWsCol() != 77 {
		t.Errorf("slave window size %v, want 33x77", sl.GetWinsize())
	}
	if got, _, _ := termiosOf(sl.GetTermios()); got == nil || got.Lflag&unix.ECHO != 0 || got.Cc[unix.VINTR] != 7 {
		t.Errorf("slave termios %v, want no ECHO and VINTR 7", sl.GetTermios())
	}
	data, err := images.ReadAll(dir, "tty-data.img", func() *tty.TtyDataEntry { return &tty.TtyDataEntry{} })
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint32]string{}
	for _, d := range data {
		got[d.GetTtyId()] = string(d.GetData())
	}
	if got[uint32(index)<<1] != "typed line\npartial" || got[uint32(index)<<1|1] != "output" {
		t.Errorf("tty-data.img: %v", got)
	}
	// Put back: the slave reads its line, the master the output.
	buf := make([]byte, 100)
	n, err := unix.Read(s, buf)
	if err != nil || string(buf[:n]) != "typed line\n" {
		t.Errorf("the slave reads %q, %v after the dump, want the typed line", buf[:n], err)
	}
	n, err = unix.Read(m, buf)
	if err != nil || !bytes.HasPrefix(buf[:n], []byte("output")) {
		t.Errorf("the master reads %q, %v after the dump, want the output", buf[:n], err)
	}
	if after, _ := unix.IoctlGetTermios(s, unix.TCGETS); after == nil || *after != *tio {
		t.Errorf("the slave's termios changed by the dump: %+v, want %+v", after, tio)
	}
}

// TestTtySlaveWithoutMaster: a slave whose master is not in the tree is a
// shell's terminal: without -j the dump says which flag is missing.
func TestTtySlaveWithoutMaster(t *testing.T) {
	_, s, _ := openPty(t)
	tab, _, err := ttyDumpOf(t, files.DumpOptions{}, s)
	defer tab.Finish(true)
	var ue *files.UnsupportedError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "-j/--shell-job") || !strings.Contains(err.Error(), "--inherit-fd fd[N]:tty[") {
		t.Fatalf("dump of a slave alone: %v", err)
	}
}

// ttyImages writes a files.img entry of a tty and the given tty-info.img
// (and tty-data.img) and returns a Restorer of them.
func ttyImages(t *testing.T, opts files.RestoreOptions, infoID uint32, infos []*tty.TtyInfoEntry, data ...*tty.TtyDataEntry) *files.Restorer {
	t.Helper()
	dir, err := images.Create(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fe := &fdinfo.FileEntry{Id: proto.Uint32(1), Type: fdinfo.FdTypes_TTY.Enum(),
		Tty: &tty.TtyFileEntry{Id: proto.Uint32(1), TtyInfoId: proto.Uint32(infoID), Flags: proto.Uint32(unix.O_RDWR), Fown: files.AnonFown()}}
	if err := dir.Write("files.img", fe); err != nil {
		t.Fatal(err)
	}
	ms := make([]proto.Message, 0, len(infos))
	for _, e := range infos {
		ms = append(ms, e)
	}
	if err := dir.Write("tty-info.img", ms...); err != nil {
		t.Fatal(err)
	}
	if len(data) > 0 {
		ds := make([]proto.Message, 0, len(data))
		for _, d := range data {
			ds = append(ds, d)
		}
		if err := dir.Write("tty-data.img", ds...); err != nil {
			t.Fatal(err)
		}
	}
	r := files.NewRestorer(opts, dir, map[uint32]*fdinfo.FileEntry{1: fe}, nil)
	t.Cleanup(func() { r.Close() })
	return r
}

func ptyInfo(id uint32, index uint32) *tty.TtyInfoEntry {
	return &tty.TtyInfoEntry{Id: proto.Uint32(id), Type: tty.TtyType_PTY.Enum(), Locked: proto.Bool(false),
		Exclusive: proto.Bool(false), PacketMode: proto.Bool(false), Sid: proto.Uint32(7), Pgrp: proto.Uint32(7),
		Rdev: proto.Uint32(uint32(ptsRdev(int(index)))), Pty: &tty.TtyPtyEntry{Index: proto.Uint32(index)}}
}

// TestTtyBadImages: images that cannot be restored give errors that say
// what is wrong, before any terminal is made.
func TestTtyBadImages(t *testing.T) {
	noIndex := ptyInfo(8, 4)
	noIndex.Pty = nil
	shortTermios := ptyInfo(8, 4)
	shortTermios.Termios = &tty.TermiosEntry{CIflag: proto.Uint32(0), COflag: proto.Uint32(0), CCflag: proto.Uint32(0),
		CLflag: proto.Uint32(0), CLine: proto.Uint32(0), CIspeed: proto.Uint32(0), COspeed: proto.Uint32(0), CCc: []uint32{1, 2}}
	live := ptyInfo(8, 4) // a slave with termios: not hung up
	live.Termios = termiosEntry(&unix.Termios{})
	ext := ptyInfo(2016, 4)
	ext.Type = tty.TtyType_EXT_TTY.Enum()
	ctty := &tty.TtyInfoEntry{Id: proto.Uint32(ctlTtyIndex << 1), Type: tty.TtyType_CTTY.Enum(), Locked: proto.Bool(false),
		Exclusive: proto.Bool(false), PacketMode: proto.Bool(false), Sid: proto.Uint32(9), Pgrp: proto.Uint32(9), Rdev: proto.Uint32(0x500)}
	for _, c := range []struct {
		name    string
		opts    files.RestoreOptions
		infoID  uint32
		infos   []*tty.TtyInfoEntry
		data    []*tty.TtyDataEntry
		want    string
		corrupt bool
	}{
		{name: "missing info entry", infoID: 0x42, infos: []*tty.TtyInfoEntry{ptyInfo(8, 4)},
			want: "tty info 0x42 is not in tty-info.img", corrupt: true},
		{name: "pty index too big", infoID: 2*5000 + 1, infos: []*tty.TtyInfoEntry{ptyInfo(2*5000+1, 5000)},
			want: "entry 0x2711: pty without a valid index", corrupt: true},
		{name: "pty without index", infoID: 8, infos: []*tty.TtyInfoEntry{noIndex},
			want: "entry 0x8: pty without a valid index", corrupt: true},
		{name: "data of an unknown tty", infoID: 8, infos: []*tty.TtyInfoEntry{ptyInfo(8, 4)},
			data: []*tty.TtyDataEntry{{TtyId: proto.Uint32(99), Data: []byte("x")}},
			want: "data of tty 0x63, which tty-info.img does not have", corrupt: true},
		{name: "slave without master, no -j", infoID: 8, infos: []*tty.TtyInfoEntry{live},
			want: "reopen tty file id 1 (/dev/pts/4): its master was outside the tree (a shell's terminal): restore with -j/--shell-job"},
		{name: "external terminal", infoID: 2016, infos: []*tty.TtyInfoEntry{ext},
			want: "a terminal outside the tree: restore with --inherit-fd fd[N]:tty["},
		{name: "/dev/tty without its session's terminal", infoID: ctlTtyIndex << 1, infos: []*tty.TtyInfoEntry{ctty},
			want: "the controlling terminal of session 9 is not in the images"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := ttyImages(t, c.opts, c.infoID, c.infos, c.data...)
			_, err := r.Open(1)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error with %q", err, c.want)
			}
			if c.corrupt != errors.Is(err, images.ErrCorrupt) {
				t.Errorf("errors.Is(%v, ErrCorrupt) = %v", err, !c.corrupt)
			}
		})
	}
	// The termios of a shell job's terminal, given to stasis' own.
	r := ttyImages(t, files.RestoreOptions{ShellJob: true}, 8, []*tty.TtyInfoEntry{shortTermios})
	if _, err := shellJobTermios(r, sessionTty{Sid: 7}); !errors.Is(err, images.ErrCorrupt) || !strings.Contains(err.Error(), "termios with 2 control characters") {
		t.Errorf("a short termios of a shell job: %v", err)
	}
}

// TestTtyHungUp: a slave without termios nor master is hung up: reads
// give end of file, TCGETS EIO.
func TestTtyHungUp(t *testing.T) {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		testutil.SkipOrFail(t, "no pty: %v", err)
	}
	r := ttyImages(t, files.RestoreOptions{}, 8, []*tty.TtyInfoEntry{ptyInfo(8, 4)})
	f, err := r.Open(1)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.Read(make([]byte, 4)); n != 0 || err != io.EOF {
		t.Errorf("read: %d, %v; want end of file", n, err)
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); !errors.Is(err, unix.EIO) {
		t.Errorf("TCGETS: %v, want EIO", err)
	}
}

// TestPtsHolder: the holder of a pty index is found by its master too
// (fdinfo's tty-index), which alone keeps the index taken.
func TestPtsHolder(t *testing.T) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0) // no slave open
	if err != nil {
		testutil.SkipOrFail(t, "no pty: %v", err)
	}
	defer unix.Close(m)
	index, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	if n := ptmxIndex(os.Getpid(), strconv.Itoa(m)); n != index {
		t.Errorf("ptmxIndex of fd %d = %d, want %d", m, n, index)
	}
	if h := ptsHolder(index); !strings.Contains(h, "held by pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("ptsHolder(%d) = %q, want this process", index, h)
	}
}
