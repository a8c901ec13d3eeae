package files

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/eventpoll"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/signalfd"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/testutil"
)

func anonFixture(t testing.TB, name string) *proc.Fdinfo {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := proc.ParseFdinfo(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return fi
}

// anonSelf reads the fdinfo of fd of this process.
func anonSelf(t testing.TB, fd int) *proc.Fdinfo {
	t.Helper()
	fi, err := proc.ReadFdinfo(os.Getpid(), fd)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}

func anonClose(t testing.TB, fds ...int) {
	t.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
}

// anonMarshals checks that an entry has every required field set and
// survives encoding.
func anonMarshals(t testing.TB, fe *fdinfo.FileEntry) {
	t.Helper()
	b, err := proto.Marshal(fe)
	if err != nil {
		t.Fatalf("marshal %v: %v", fe, err)
	}
	back := &fdinfo.FileEntry{}
	if err := proto.Unmarshal(b, back); err != nil || !proto.Equal(back, fe) {
		t.Fatalf("entry does not round-trip: %v\n%v\n%v", err, fe, back)
	}
}

func anonGetfl(t testing.TB, fd int) int {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fl
}

func TestAnonParseFixtures(t *testing.T) {
	count, sem, err := parseEventfd(anonFixture(t, "eventfd-semaphore.fdinfo"))
	if err != nil || count != 0x100000005 || !sem {
		t.Errorf("eventfd-semaphore: %#x %v %v", count, sem, err)
	}
	count, sem, err = parseEventfd(anonFixture(t, "eventfd-linux5.fdinfo"))
	if err != nil || count != 0 || sem {
		t.Errorf("eventfd-linux5: %#x %v %v", count, sem, err)
	}

	items, err := parseEpollItems(anonFixture(t, "epoll.fdinfo"))
	if err != nil || len(items) != 2 {
		t.Fatalf("epoll: %v %v", items, err)
	}
	want := []struct {
		tfd, events, dev uint32
		data, ino        uint64
	}{{4, 0x4000001d, 0xf, 7, 0x3d577}, {3, 0x80000019, 0x10, 0xdeadbeefcafe1234, 0x40e}}
	for i, w := range want {
		it := items[i]
		if it.GetTfd() != w.tfd || it.GetEvents() != w.events || it.GetData() != w.data ||
			it.GetInode() != w.ino || it.GetDev() != w.dev || it.Pos == nil || it.GetPos() != 0 {
			t.Errorf("epoll item %d: %v, want %+v", i, it, w)
		}
	}
	if items, err := parseEpollItems(anonFixture(t, "epoll-empty.fdinfo")); err != nil || len(items) != 0 {
		t.Errorf("epoll-empty: %v %v", items, err)
	}

	m, err := parseSigmask(anonFixture(t, "signalfd.fdinfo"))
	// SIGUSR1 (10), SIGRTMIN+2 (36), 64
	if err != nil || m != 1<<9|1<<35|1<<63 {
		t.Errorf("signalfd: %#x %v", m, err)
	}

	for name, w := range map[string]timerState{
		"timerfd-expired.fdinfo":  {clock: 1, ticks: 1, interval: [2]uint64{0, 20e6}},
		"timerfd-abs.fdinfo":      {clock: 0, flags: 3, value: [2]uint64{99, 974143584}, interval: [2]uint64{0, 20e6}},
		"timerfd-disarmed.fdinfo": {clock: 7},
	} {
		st, err := parseTimerfd(anonFixture(t, name))
		if err != nil || st != w {
			t.Errorf("%s: %+v %v, want %+v", name, st, err, w)
		}
	}
}

func TestAnonMalformed(t *testing.T) {
	for _, tc := range []struct{ name, text string }{
		{"eventfd no count", "eventfd-id: 3\n"},
		{"eventfd count", "eventfd-count: xyz\n"},
		{"eventfd max", "eventfd-count: ffffffffffffffff\n"},
		{"eventfd sem", "eventfd-count: 1\neventfd-semaphore: 2\n"},
		{"epoll no data", "tfd: 3 events: 19\n"},
		{"epoll stray", "tfd: 3 events: 19 data: 0 junk\n"},
		{"epoll dangling", "tfd: 3 events: 19 data:\n"},
		{"epoll twice", "tfd: 3 events: 19 data: 0 data: 1\n"},
		{"epoll negative", "tfd: -3 events: 19 data: 0\n"},
		{"epoll big events", "tfd: 3 events: 100000000 data: 0\n"},
		{"epoll pos", "tfd: 3 events: 19 data: 0 pos:x\n"},
		{"sigmask", "sigmask: 1g\n"},
		{"timer clock", "clockid: 3\nticks: 0\nsettime flags: 00\nit_value: (0, 0)\nit_interval: (0, 0)\n"},
		{"timer nsec", "clockid: 1\nticks: 0\nsettime flags: 00\nit_value: (0, 1000000000)\nit_interval: (0, 0)\n"},
		{"timer flags", "clockid: 1\nticks: 0\nsettime flags: 04\nit_value: (0, 0)\nit_interval: (0, 0)\n"},
		{"timer paren", "clockid: 1\nticks: 0\nsettime flags: 00\nit_value: 0, 0\nit_interval: (0, 0)\n"},
		{"timer sec", "clockid: 1\nticks: 0\nsettime flags: 00\nit_value: (9223372036854775808, 0)\nit_interval: (0, 0)\n"},
		{"timer missing", "clockid: 1\nticks: 0\nsettime flags: 00\nit_value: (0, 0)\n"},
	} {
		fi, err := proc.ParseFdinfo(strings.NewReader("pos: 0\nflags: 02\n" + tc.text))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var perr error
		switch {
		case strings.HasPrefix(tc.name, "eventfd"):
			_, perr = DumpEventfd(1, 3, 1, fi)
		case strings.HasPrefix(tc.name, "epoll"):
			_, perr = parseEpollItems(fi)
		case strings.HasPrefix(tc.name, "sigmask"):
			_, perr = DumpSignalfd(1, 3, 1, fi)
		default:
			_, perr = DumpTimerfd(-1, 3, 1, fi)
		}
		if !errors.Is(perr, proc.ErrMalformed) {
			t.Errorf("%s: error %v, want one wrapping proc.ErrMalformed", tc.name, perr)
		}
	}
}

func TestAnonEventfd(t *testing.T) {
	for _, tc := range []struct {
		name  string
		count uint64
		flags int
	}{
		{"semaphore nonblock", 5, unix.EFD_SEMAPHORE | unix.EFD_NONBLOCK},
		{"counter over 32 bits", 0x100000005, 0},
		{"zero", 0, unix.EFD_NONBLOCK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, err := unix.Eventfd(0, tc.flags|unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			anonClose(t, fd)
			if tc.count != 0 {
				anonWrite64(t, fd, tc.count)
			}
			fe, err := DumpEventfd(os.Getpid(), fd, 9, anonSelf(t, fd))
			if err != nil {
				t.Fatal(err)
			}
			anonMarshals(t, fe)
			e := fe.GetEfd()
			wantFlags := uint32(anonGetfl(t, fd)) | uint32(tc.flags&unix.EFD_SEMAPHORE)
			if fe.GetType() != fdinfo.FdTypes_EVENTFD || fe.GetId() != 9 || e.GetId() != 9 ||
				e.GetCounter() != tc.count || e.GetFlags() != wantFlags {
				t.Fatalf("entry %v, want counter %#x flags %#o", fe, tc.count, wantFlags)
			}

			f, err := OpenEventfd(fe)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			nfd := int(f.Fd())
			if got, want := anonGetfl(t, nfd), anonGetfl(t, fd); got != want {
				t.Errorf("reopened flags %#o, want %#o", got, want)
			}
			if l, _ := os.Readlink(filepath.Join("/proc/self/fd", strconv.Itoa(nfd))); l != "anon_inode:[eventfd]" {
				t.Errorf("reopened fd is %q", l)
			}
			ofi, nfi := anonSelf(t, fd), anonSelf(t, nfd)
			for _, k := range []string{"eventfd-count", "eventfd-semaphore"} {
				if ofi.Extra[k] != nfi.Extra[k] {
					t.Errorf("%s: reopened %q, dumped %q", k, nfi.Extra[k], ofi.Extra[k])
				}
			}
			if tc.count == 0 {
				if _, err := unix.Read(nfd, make([]byte, 8)); err != unix.EAGAIN {
					t.Errorf("read of an empty eventfd: %v, want EAGAIN", err)
				}
				return
			}
			want := tc.count
			if tc.flags&unix.EFD_SEMAPHORE != 0 {
				want = 1
			}
			if got := anonRead64(t, nfd); got != want {
				t.Errorf("read %#x, want %#x", got, want)
			}
			if tc.flags&unix.EFD_SEMAPHORE != 0 {
				if c := anonSelf(t, nfd).Extra["eventfd-count"]; c != "4" {
					t.Errorf("count after one semaphore read %q, want 4", c)
				}
			}
		})
	}
}

func anonWrite64(t testing.TB, fd int, v uint64) {
	t.Helper()
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], v)
	if _, err := unix.Write(fd, b[:]); err != nil {
		t.Fatal(err)
	}
}

func anonRead64(t testing.TB, fd int) uint64 {
	t.Helper()
	var b [8]byte
	if n, err := unix.Read(fd, b[:]); err != nil || n != 8 {
		t.Fatalf("read fd %d: %d %v", fd, n, err)
	}
	return binary.NativeEndian.Uint64(b[:])
}

func anonEpollData(ev unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

func anonEpollEvent(events uint32, data uint64) *unix.EpollEvent {
	return &unix.EpollEvent{Events: events, Fd: int32(uint32(data)), Pad: int32(uint32(data >> 32))}
}

// anonReady is what one epoll_wait reports: events by data.
func anonReady(t testing.TB, ep int) map[uint64]uint32 {
	t.Helper()
	evs := make([]unix.EpollEvent, 16)
	n, err := unix.EpollWait(ep, evs, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]uint32{}
	for _, ev := range evs[:n] {
		out[anonEpollData(ev)] = ev.Events
	}
	return out
}

func TestAnonEpoll(t *testing.T) {
	efd, err := unix.Eventfd(3, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	var p, q [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	if err := unix.Pipe2(q[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	anonClose(t, efd, p[0], p[1], q[0], q[1], ep)
	if _, err := unix.Write(p[1], []byte("x")); err != nil {
		t.Fatal(err)
	}
	type item struct {
		fd     int
		events uint32
		data   uint64
		ready  bool
	}
	items := []item{
		{efd, unix.EPOLLIN | unix.EPOLLET, 0xdeadbeefcafe0001, true},
		{p[0], unix.EPOLLIN | unix.EPOLLET, 0x1122334455667788, true},
		{p[1], unix.EPOLLOUT | unix.EPOLLET | unix.EPOLLONESHOT, 7, true},
		{q[0], unix.EPOLLIN, 42, false},
	}
	for _, it := range items {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, it.fd, anonEpollEvent(it.events, it.data)); err != nil {
			t.Fatal(err)
		}
	}

	fe, err := DumpEpoll(os.Getpid(), ep, 12, anonSelf(t, ep))
	if err != nil {
		t.Fatal(err)
	}
	anonMarshals(t, fe)
	e := fe.GetEpfd()
	if fe.GetType() != fdinfo.FdTypes_EVENTPOLL || fe.GetId() != 12 || e.GetId() != 12 || e.GetFlags() != unix.O_RDWR ||
		len(e.GetTfd()) != len(items) {
		t.Fatalf("entry %v", fe)
	}
	byFd := map[uint32]int{}
	for i, tfd := range e.GetTfd() {
		byFd[tfd.GetTfd()] = i
		if tfd.GetId() != 12 {
			t.Errorf("item %v: id %d, want the epoll's 12", tfd, tfd.GetId())
		}
	}
	for _, it := range items {
		i, ok := byFd[uint32(it.fd)]
		if !ok {
			t.Fatalf("fd %d missing from %v", it.fd, e.GetTfd())
		}
		tfd := e.GetTfd()[i]
		var st unix.Stat_t
		if err := unix.Fstat(it.fd, &st); err != nil {
			t.Fatal(err)
		}
		// The kernel adds EPOLLERR|EPOLLHUP to every item.
		if tfd.GetEvents() != it.events|unix.EPOLLERR|unix.EPOLLHUP || tfd.GetData() != it.data ||
			tfd.GetInode() != st.Ino || tfd.GetDev() != unix.Minor(st.Dev) || unix.Major(st.Dev) != 0 {
			t.Errorf("item for fd %d: %v, want events %#x data %#x ino %d dev %#x", it.fd, tfd, it.events, it.data, st.Ino, st.Dev)
		}
	}

	f, err := OpenEpoll(fe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ep2 := int(f.Fd())
	if got, want := anonGetfl(t, ep2), anonGetfl(t, ep); got != want {
		t.Errorf("reopened flags %#o, want %#o", got, want)
	}
	targets, err := epollTargets(fe)
	if err != nil || len(targets) != len(items) {
		t.Fatalf("targets %v", targets)
	}
	for _, tg := range targets {
		if err := unix.EpollCtl(ep2, unix.EPOLL_CTL_ADD, tg.Fd, anonEpollEvent(tg.Events, tg.Data)); err != nil {
			t.Fatalf("add %+v: %v", tg, err)
		}
	}
	// Same items: the reopened fdinfo lists the same lines.
	if a, b := anonSelf(t, ep).Lines, anonSelf(t, ep2).Lines; strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Errorf("items differ:\n%s\nreopened:\n%s", strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
	orig, reop := anonReady(t, ep), anonReady(t, ep2)
	if !maps.Equal(orig, reop) {
		t.Errorf("epoll_wait: original %v, reopened %v", orig, reop)
	}
	for _, it := range items {
		if _, ok := reop[it.data]; ok != it.ready {
			t.Errorf("fd %d (data %#x) ready %v, want %v", it.fd, it.data, ok, it.ready)
		}
	}
	// Edge-triggered and one-shot items report once, in both.
	if o, r := anonReady(t, ep), anonReady(t, ep2); len(o) != 0 || len(r) != 0 {
		t.Errorf("second epoll_wait: original %v, reopened %v; want nothing", o, r)
	}
	if tg, _ := epollTargets(&fdinfo.FileEntry{Type: fdinfo.FdTypes_EVENTFD.Enum()}); tg != nil {
		t.Error("targets of an eventfd entry")
	}
}

func TestAnonEpollLostTarget(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		d, err := unix.Dup(p[0])
		if err != nil {
			t.Fatal(err)
		}
		ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		anonClose(t, p[1], d, ep)
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, p[0], anonEpollEvent(unix.EPOLLIN, 1)); err != nil {
			t.Fatal(err)
		}
		if reuse {
			// Another file at the number the item was added with.
			if err := unix.Dup3(p[1], p[0], unix.O_CLOEXEC); err != nil {
				t.Fatal(err)
			}
			anonClose(t, p[0])
		} else {
			unix.Close(p[0])
		}
		_, err = DumpEpoll(os.Getpid(), ep, 1, anonSelf(t, ep))
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "fd "+strconv.Itoa(p[0])) {
			t.Errorf("reuse %v: error %v, want ErrUnsupported naming fd %d", reuse, err, p[0])
		}
	}
}

func TestAnonSignalfd(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set, old unix.Sigset_t
	set.Val[0] = 1<<(unix.SIGUSR1-1) | 1<<(unix.SIGUSR2-1)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, &old); err != nil {
		t.Fatal(err)
	}
	defer unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)

	sfd, err := unix.Signalfd(-1, &set, unix.SFD_NONBLOCK|unix.SFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	anonClose(t, sfd)
	fe, err := DumpSignalfd(os.Getpid(), sfd, 4, anonSelf(t, sfd))
	if err != nil {
		t.Fatal(err)
	}
	anonMarshals(t, fe)
	if e := fe.GetSgfd(); fe.GetType() != fdinfo.FdTypes_SIGNALFD || e.GetId() != 4 ||
		e.GetSigmask() != uint64(set.Val[0]) || e.GetFlags() != unix.O_RDWR|unix.O_NONBLOCK {
		t.Fatalf("entry %v", fe)
	}
	f, err := OpenSignalfd(fe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nfd := int(f.Fd())
	if got, want := anonSelf(t, nfd).Extra["sigmask"], anonSelf(t, sfd).Extra["sigmask"]; got != want {
		t.Errorf("reopened sigmask %s, want %s", got, want)
	}
	if got, want := anonGetfl(t, nfd), anonGetfl(t, sfd); got != want {
		t.Errorf("reopened flags %#o, want %#o", got, want)
	}
	if err := unix.Tgkill(os.Getpid(), unix.Gettid(), unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var si [128]byte
	n, err := unix.Read(nfd, si[:])
	if err != nil || n != len(si) {
		t.Fatalf("read signalfd: %d %v", n, err)
	}
	if signo := binary.NativeEndian.Uint32(si[:4]); signo != uint32(unix.SIGUSR1) {
		t.Errorf("signalfd read signal %d, want SIGUSR1", signo)
	}
}

func anonTimerfd(t testing.TB, clock, flags int) int {
	t.Helper()
	fd, err := unix.TimerfdCreate(clock, flags|unix.TFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	anonClose(t, fd)
	return fd
}

func anonSettime(t testing.TB, fd, flags int, value, interval time.Duration) {
	t.Helper()
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(value)), Interval: unix.NsecToTimespec(int64(interval))}
	if err := unix.TimerfdSettime(fd, flags, &its, nil); err != nil {
		t.Fatal(err)
	}
}

func anonGettime(t testing.TB, fd int) (value, interval time.Duration) {
	t.Helper()
	var its unix.ItimerSpec
	if err := unix.TimerfdGettime(fd, &its); err != nil {
		t.Fatal(err)
	}
	return time.Duration(its.Value.Nano()), time.Duration(its.Interval.Nano())
}

// anonPeriod reads n expirations from a blocking timerfd and returns the
// time they took, from the first to the last.
func anonPeriod(t testing.TB, fd, n int) time.Duration {
	t.Helper()
	anonRead64(t, fd)
	start := time.Now()
	for got := 0; got < n; {
		got += int(anonRead64(t, fd))
	}
	return time.Since(start)
}

func TestAnonTimerfdPeriodic(t *testing.T) {
	const period = 20 * time.Millisecond
	fd := anonTimerfd(t, unix.CLOCK_MONOTONIC, 0)
	anonSettime(t, fd, 0, period, period)
	// Expired twice, never read: fdinfo shows it_value (0, 0).
	time.Sleep(50 * time.Millisecond)
	fi := anonSelf(t, fd)
	if fi.Extra["it_value"] != "(0, 0)" || fi.Extra["ticks"] != "1" {
		t.Fatalf("setup: fdinfo %v, want an expired timer", fi.Extra)
	}
	fe, err := DumpTimerfd(os.Getpid(), fd, 5, fi)
	if err != nil {
		t.Fatal(err)
	}
	anonMarshals(t, fe)
	e := fe.GetTfd()
	if fe.GetType() != fdinfo.FdTypes_TIMERFD || e.GetId() != 5 || e.GetClockid() != unix.CLOCK_MONOTONIC ||
		e.GetIsec() != 0 || e.GetInsec() != uint64(period) || e.GetSettimeFlags() != 0 || e.GetFlags() != unix.O_RDWR {
		t.Fatalf("entry %v", fe)
	}
	// The missed period is counted and the next expiry known.
	if e.GetTicks() < 2 || e.GetVsec() != 0 || e.GetVnsec() == 0 || e.GetVnsec() > uint64(period) {
		t.Fatalf("entry %v: want ticks >= 2 and the time to the next period", fe)
	}
	f, err := OpenTimerfd(fe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nfd := int(f.Fd())
	nfi := anonSelf(t, nfd)
	if nfi.Extra["clockid"] != "1" || nfi.Extra["it_interval"] != "(0, 20000000)" || nfi.Extra["settime flags"] != "00" {
		t.Errorf("reopened fdinfo %v", nfi.Extra)
	}
	if _, iv := anonGettime(t, nfd); iv != period {
		t.Errorf("reopened interval %v", iv)
	}
	if got := anonRead64(t, nfd); got < e.GetTicks() || got > e.GetTicks()+3 {
		t.Errorf("first read %d expirations, dumped %d", got, e.GetTicks())
	}
	if d := anonPeriod(t, nfd, 5); d < 4*period || d > 5*period+80*time.Millisecond {
		t.Errorf("5 expirations took %v, want about %v", d, 5*period)
	}
	// The dumped timer is intact: its next read gets what the dump saw.
	if got := anonRead64(t, fd); got < e.GetTicks() {
		t.Errorf("dumped timer read %d, want >= %d", got, e.GetTicks())
	}
}

func TestAnonTimerfdExpiredOnce(t *testing.T) {
	fd := anonTimerfd(t, unix.CLOCK_BOOTTIME, unix.TFD_NONBLOCK)
	anonSettime(t, fd, 0, time.Millisecond, 0)
	time.Sleep(10 * time.Millisecond)
	fe, err := DumpTimerfd(os.Getpid(), fd, 6, anonSelf(t, fd))
	if err != nil {
		t.Fatal(err)
	}
	if e := fe.GetTfd(); e.GetTicks() != 1 || e.GetClockid() != unix.CLOCK_BOOTTIME || e.GetVnsec() != 0 || e.GetInsec() != 0 {
		t.Fatalf("entry %v", fe)
	}
	f, err := OpenTimerfd(fe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nfd := int(f.Fd())
	if got := anonGetfl(t, nfd); got&unix.O_NONBLOCK == 0 {
		t.Errorf("reopened flags %#o lack O_NONBLOCK", got)
	}
	if got := anonRead64(t, nfd); got != 1 {
		t.Errorf("read %d, want 1", got)
	}
	if _, err := unix.Read(nfd, make([]byte, 8)); err != unix.EAGAIN {
		t.Errorf("second read: %v, want EAGAIN", err)
	}
}

func TestAnonTimerfdAbsolute(t *testing.T) {
	fd := anonTimerfd(t, unix.CLOCK_REALTIME, 0)
	at := time.Now().Add(100 * time.Second)
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(at.UnixNano())}
	if err := unix.TimerfdSettime(fd, unix.TFD_TIMER_ABSTIME|unix.TFD_TIMER_CANCEL_ON_SET, &its, nil); err != nil {
		t.Fatal(err)
	}
	fe, err := DumpTimerfd(os.Getpid(), fd, 7, anonSelf(t, fd))
	if err != nil {
		t.Fatal(err)
	}
	if e := fe.GetTfd(); e.GetSettimeFlags() != 3 || e.GetVsec() < 98 || e.GetVsec() > 100 {
		t.Fatalf("entry %v", fe)
	}
	f, err := OpenTimerfd(fe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nfi := anonSelf(t, int(f.Fd()))
	if nfi.Extra["settime flags"] != "03" || nfi.Extra["clockid"] != "0" {
		t.Errorf("reopened fdinfo %v", nfi.Extra)
	}
	if v, _ := anonGettime(t, int(f.Fd())); v < 98*time.Second || v > 100*time.Second {
		t.Errorf("reopened timer fires in %v, want about 100s", v)
	}
}

// A periodic timer dumped expired without its next expiry (criu's own
// images, or no pidfd_getfd) keeps its ticks and restarts.
func TestAnonTimerfdNoNextExpiry(t *testing.T) {
	fe := &fdinfo.FileEntry{Type: fdinfo.FdTypes_TIMERFD.Enum(), Id: proto.Uint32(3), Tfd: &timerfd.TimerfdEntry{
		Id: proto.Uint32(3), Flags: proto.Uint32(unix.O_RDWR), Fown: AnonFown(), Clockid: proto.Uint32(unix.CLOCK_MONOTONIC),
		Ticks: proto.Uint64(3), SettimeFlags: proto.Uint32(0), Vsec: proto.Uint64(0), Vnsec: proto.Uint64(0),
		Isec: proto.Uint64(0), Insec: proto.Uint64(uint64(20 * time.Millisecond)),
	}}
	f, err := OpenTimerfd(fe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := anonRead64(t, int(f.Fd())); got != 3 && got != 4 {
		t.Errorf("read %d, want the 3 dumped ticks", got)
	}
	if d := anonPeriod(t, int(f.Fd()), 3); d < 2*20*time.Millisecond || d > 200*time.Millisecond {
		t.Errorf("3 expirations took %v", d)
	}
}

func TestAnonBadEntries(t *testing.T) {
	timer := func(mod func(e *timerfd.TimerfdEntry)) *fdinfo.FileEntry {
		e := &timerfd.TimerfdEntry{Id: proto.Uint32(1), Flags: proto.Uint32(2), Fown: AnonFown(), Clockid: proto.Uint32(1),
			Ticks: proto.Uint64(0), SettimeFlags: proto.Uint32(0), Vsec: proto.Uint64(0), Vnsec: proto.Uint64(0),
			Isec: proto.Uint64(0), Insec: proto.Uint64(0)}
		mod(e)
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_TIMERFD.Enum(), Id: proto.Uint32(1), Tfd: e}
	}
	for name, fe := range map[string]*fdinfo.FileEntry{
		"clock":          timer(func(e *timerfd.TimerfdEntry) { e.Clockid = proto.Uint32(3) }),
		"clock overflow": timer(func(e *timerfd.TimerfdEntry) { e.Clockid = proto.Uint32(1<<32 - 1) }),
		"nsec":           timer(func(e *timerfd.TimerfdEntry) { e.Vnsec = proto.Uint64(1e9) }),
		"sec":            timer(func(e *timerfd.TimerfdEntry) { e.Isec = proto.Uint64(1 << 63) }),
		"flags":          timer(func(e *timerfd.TimerfdEntry) { e.SettimeFlags = proto.Uint32(4) }),
		"counter": {Type: fdinfo.FdTypes_EVENTFD.Enum(), Efd: &eventfd.EventfdFileEntry{
			Counter: proto.Uint64(1<<64 - 1)}},
		"type": {Type: fdinfo.FdTypes_REG.Enum(), Efd: &eventfd.EventfdFileEntry{}},
	} {
		var err error
		switch fe.GetType() {
		case fdinfo.FdTypes_TIMERFD:
			_, err = OpenTimerfd(fe)
		default:
			_, err = OpenEventfd(fe)
		}
		if !errors.Is(err, images.ErrCorrupt) {
			t.Errorf("%s: error %v, want images.ErrCorrupt", name, err)
		}
	}
	for _, open := range []func(*fdinfo.FileEntry) (*os.File, error){OpenEventfd, OpenEpoll, OpenSignalfd, OpenTimerfd} {
		if _, err := open(&fdinfo.FileEntry{Type: fdinfo.FdTypes_PIPE.Enum(), Id: proto.Uint32(2)}); !errors.Is(err, images.ErrCorrupt) {
			t.Errorf("pipe entry: %v", err)
		}
	}
	if _, err := OpenSignalfd(&fdinfo.FileEntry{Type: fdinfo.FdTypes_SIGNALFD.Enum(), Sgfd: &signalfd.SignalfdEntry{}}); err != nil {
		t.Errorf("signalfd accepting nothing: %v", err)
	}
}

// TestAnonCrit decodes the entries with Debian's crit, an independent
// decoder.
func TestAnonCrit(t *testing.T) {
	crit := testutil.RequireTool(t, "crit")
	var ents []proto.Message
	for i, mk := range []func() (*fdinfo.FileEntry, error){
		func() (*fdinfo.FileEntry, error) {
			return DumpEventfd(1, 3, 1, anonFixture(t, "eventfd-semaphore.fdinfo"))
		},
		func() (*fdinfo.FileEntry, error) {
			fi := anonFixture(t, "epoll.fdinfo")
			items, err := parseEpollItems(fi)
			fe := &fdinfo.FileEntry{Type: fdinfo.FdTypes_EVENTPOLL.Enum(), Id: proto.Uint32(2)}
			for _, it := range items {
				it.Id = proto.Uint32(2)
			}
			fe.Epfd = &eventpoll.EventpollFileEntry{Id: proto.Uint32(2), Flags: proto.Uint32(anonFlags(fi)), Fown: AnonFown(), Tfd: items}
			return fe, err
		},
		func() (*fdinfo.FileEntry, error) { return DumpSignalfd(1, 5, 3, anonFixture(t, "signalfd.fdinfo")) },
		func() (*fdinfo.FileEntry, error) { return DumpTimerfd(-1, 6, 4, anonFixture(t, "timerfd-abs.fdinfo")) },
	} {
		fe, err := mk()
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		ents = append(ents, fe)
	}
	dir := t.TempDir()
	d := &images.Dir{Path: dir}
	if err := d.Write("files.img", ents...); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(crit, "decode", "-i", filepath.Join(dir, "files.img")).Output()
	if err != nil {
		t.Fatalf("crit decode: %v", err)
	}
	var img struct {
		Magic   string           `json:"magic"`
		Entries []map[string]any `json:"entries"`
	}
	if err := json.Unmarshal(out, &img); err != nil {
		t.Fatal(err)
	}
	if img.Magic != "FILES" || len(img.Entries) != 4 {
		t.Fatalf("crit: %s", out)
	}
	sub := func(i int, k string) map[string]any {
		m, _ := img.Entries[i][k].(map[string]any)
		if m == nil {
			t.Fatalf("crit entry %d has no %s: %v", i, k, img.Entries[i])
		}
		return m
	}
	num := func(v any) float64 { f, _ := v.(float64); return f }
	if e := sub(0, "efd"); img.Entries[0]["type"] != "EVENTFD" || num(e["counter"]) != 0x100000005 || num(e["flags"]) != 0o4003 {
		t.Errorf("crit eventfd %v", img.Entries[0])
	}
	if e := sub(1, "epfd"); img.Entries[1]["type"] != "EVENTPOLL" {
		t.Errorf("crit epoll %v", img.Entries[1])
	} else if tfd, _ := e["tfd"].([]any); len(tfd) != 2 {
		t.Errorf("crit epoll items %v", e)
	} else if it, _ := tfd[1].(map[string]any); num(it["tfd"]) != 3 || num(it["events"]) != 0x80000019 || num(it["inode"]) != 0x40e || num(it["dev"]) != 0x10 {
		t.Errorf("crit epoll item %v", it)
	}
	if e := sub(2, "sgfd"); img.Entries[2]["type"] != "SIGNALFD" || num(e["sigmask"]) != float64(uint64(1<<9|1<<35|1<<63)) {
		t.Errorf("crit signalfd %v", img.Entries[2])
	}
	if e := sub(3, "tfd"); img.Entries[3]["type"] != "TIMERFD" || num(e["clockid"]) != 0 || num(e["settime_flags"]) != 3 ||
		num(e["vsec"]) != 99 || num(e["vnsec"]) != 974143584 || num(e["insec"]) != 20e6 {
		t.Errorf("crit timerfd %v", img.Entries[3])
	}
}

func FuzzAnonFdinfo(f *testing.F) {
	names, _ := filepath.Glob(filepath.Join("testdata", "*.fdinfo"))
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("pos: 0\nflags: 02\ntfd: 1 events:1 data: 2 pos: -1 ino:ff sdev:1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fi, err := proc.ParseFdinfo(bytes.NewReader(b))
		if err != nil {
			return
		}
		check := func(fe *fdinfo.FileEntry, err error) {
			if err == nil {
				anonMarshals(t, fe)
			} else if !errors.Is(err, proc.ErrMalformed) {
				t.Fatalf("error %v does not wrap proc.ErrMalformed", err)
			}
		}
		check(DumpEventfd(1, 3, 1, fi))
		check(DumpSignalfd(1, 3, 1, fi))
		// pid -1: no process to take the fd from, fdinfo alone.
		fe, err := DumpTimerfd(-1, 3, 1, fi)
		check(fe, err)
		if err == nil {
			e := fe.GetTfd()
			if e.GetVnsec() >= 1e9 || e.GetInsec() >= 1e9 || e.GetVsec() > 1<<63-1 || e.GetIsec() > 1<<63-1 {
				t.Fatalf("accepted %v", e)
			}
		}
		items, err := parseEpollItems(fi)
		if err != nil && !errors.Is(err, proc.ErrMalformed) {
			t.Fatalf("error %v does not wrap proc.ErrMalformed", err)
		}
		for _, it := range items {
			it.Id = proto.Uint32(1)
			if _, err := proto.Marshal(it); err != nil {
				t.Fatalf("item %v: %v", it, err)
			}
		}
	})
}

// FuzzAnonOpen reopens entries of any content: an error or a file, never
// a panic.
func FuzzAnonOpen(f *testing.F) {
	f.Add(uint64(5), uint32(0o4003), uint64(1<<9), uint32(1), uint32(0), uint64(0), uint64(1), uint64(0), uint64(20e6), uint64(2))
	f.Add(uint64(0), uint32(2), uint64(0), uint32(9), uint32(3), uint64(1<<62), uint64(0), uint64(1<<63), uint64(1e9), uint64(0))
	f.Fuzz(func(t *testing.T, counter uint64, flags uint32, mask uint64, clock, sflags uint32, vsec, vnsec, isec, insec, ticks uint64) {
		testutil.RequireRoot(t) // alarm clocks need CAP_WAKE_ALARM
		flags &^= unix.O_ASYNC  // not a signal storm in the fuzzer
		id := proto.Uint32(1)
		ents := []*fdinfo.FileEntry{
			{Type: fdinfo.FdTypes_EVENTFD.Enum(), Id: id, Efd: &eventfd.EventfdFileEntry{
				Id: id, Flags: proto.Uint32(flags), Fown: AnonFown(), Counter: proto.Uint64(counter)}},
			{Type: fdinfo.FdTypes_SIGNALFD.Enum(), Id: id, Sgfd: &signalfd.SignalfdEntry{
				Id: id, Flags: proto.Uint32(flags), Fown: AnonFown(), Sigmask: proto.Uint64(mask)}},
			{Type: fdinfo.FdTypes_TIMERFD.Enum(), Id: id, Tfd: &timerfd.TimerfdEntry{
				Id: id, Flags: proto.Uint32(flags), Fown: AnonFown(), Clockid: proto.Uint32(clock), Ticks: proto.Uint64(ticks),
				SettimeFlags: proto.Uint32(sflags), Vsec: proto.Uint64(vsec), Vnsec: proto.Uint64(vnsec),
				Isec: proto.Uint64(isec), Insec: proto.Uint64(insec)}},
			{Type: fdinfo.FdTypes_EVENTPOLL.Enum(), Id: id, Epfd: &eventpoll.EventpollFileEntry{Id: id, Flags: proto.Uint32(flags), Fown: AnonFown()}},
		}
		for _, fe := range ents {
			var file *os.File
			var err error
			switch fe.GetType() {
			case fdinfo.FdTypes_EVENTFD:
				file, err = OpenEventfd(fe)
			case fdinfo.FdTypes_SIGNALFD:
				file, err = OpenSignalfd(fe)
			case fdinfo.FdTypes_TIMERFD:
				file, err = OpenTimerfd(fe)
			case fdinfo.FdTypes_EVENTPOLL:
				file, err = OpenEpoll(fe)
			}
			if (file == nil) == (err == nil) {
				t.Fatalf("%v: file %v, error %v", fe, file, err)
			}
			if file != nil {
				file.Close()
			}
		}
	})
}
