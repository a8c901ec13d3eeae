package files

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timerfd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

func init() {
	Register(&Kind{Name: "timerfd", Type: fdinfo.FdTypes_TIMERFD,
		Dump: func(_ *Table, fd *Fd) (*fdinfo.FileEntry, error) { return DumpTimerfd(fd.Pid, fd.Num, fd.ID, fd.Info) },
		Open: func(_ *Restorer, fe *fdinfo.FileEntry) (*os.File, error) { return OpenTimerfd(fe) }})
}

// timerState is what a timerfd's fdinfo tells (timerfd_show, fs/timerfd.c).
type timerState struct {
	clock    int32
	ticks    uint64
	flags    uint32    // settime flags: TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET
	value    [2]uint64 // time to the next expiry, relative even for ABSTIME timers
	interval [2]uint64
}

// DumpTimerfd returns the entry of a timerfd: clock, settime flags, the
// time left to the next expiry, the interval and the expirations not read
// yet (ticks).
//
// A periodic timer that expired and was not read since shows it_value
// (0, 0): the kernel moves it to its next period only on read or
// timerfd_gettime. For that one timer, DumpTimerfd takes a copy of the fd
// (pidfd_getfd) and calls timerfd_gettime on it, which does that move and
// counts the missed periods into ticks exactly as the task's next read
// would, so the task sees no difference; then it reads fdinfo again. If
// that is not possible, the entry keeps (0, 0) and OpenTimerfd restarts
// the timer one interval later.
func DumpTimerfd(pid, fd int, id uint32, fi *proc.Fdinfo) (*fdinfo.FileEntry, error) {
	st, err := parseTimerfd(fi)
	if err != nil {
		return nil, fmt.Errorf("dump fd %d of pid %d (timerfd): %w", fd, pid, err)
	}
	if st.ticks != 0 && st.value == [2]uint64{} && st.interval != [2]uint64{} {
		if fi2, err := forwardTimerfd(pid, fd); err == nil {
			if st2, err := parseTimerfd(fi2); err == nil {
				st = st2
			}
		}
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_TIMERFD.Enum(),
		Id:   proto.Uint32(id),
		Tfd: &timerfd.TimerfdEntry{
			Id:           proto.Uint32(id),
			Flags:        proto.Uint32(anonFlags(fi)),
			Fown:         AnonFown(),
			Clockid:      proto.Uint32(uint32(st.clock)),
			Ticks:        proto.Uint64(st.ticks),
			SettimeFlags: proto.Uint32(st.flags),
			Vsec:         proto.Uint64(st.value[0]),
			Vnsec:        proto.Uint64(st.value[1]),
			Isec:         proto.Uint64(st.interval[0]),
			Insec:        proto.Uint64(st.interval[1]),
		},
	}, nil
}

// forwardTimerfd runs timerfd_gettime on a copy of fd of pid and returns
// the fdinfo read afterwards.
func forwardTimerfd(pid, fd int) (*proc.Fdinfo, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pidfd)
	cp, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(cp)
	var its unix.ItimerSpec
	if err := unix.TimerfdGettime(cp, &its); err != nil {
		return nil, err
	}
	return proc.ReadFdinfo(pid, fd)
}

// timerfdClocks are the clocks timerfd_create accepts.
var timerfdClocks = map[int32]string{
	unix.CLOCK_REALTIME:       "CLOCK_REALTIME",
	unix.CLOCK_MONOTONIC:      "CLOCK_MONOTONIC",
	unix.CLOCK_BOOTTIME:       "CLOCK_BOOTTIME",
	unix.CLOCK_REALTIME_ALARM: "CLOCK_REALTIME_ALARM",
	unix.CLOCK_BOOTTIME_ALARM: "CLOCK_BOOTTIME_ALARM",
}

const timerfdSettimeFlags = unix.TFD_TIMER_ABSTIME | unix.TFD_TIMER_CANCEL_ON_SET

// parseTimerfd reads
//
//	clockid: %d
//	ticks: %llu
//	settime flags: 0%o
//	it_value: (%llu, %llu)
//	it_interval: (%llu, %llu)
func parseTimerfd(fi *proc.Fdinfo) (timerState, error) {
	var st timerState
	get := func(key string) (string, error) {
		v, ok := fi.Extra[key]
		if !ok {
			return "", malformed("no %s line", key)
		}
		return v, nil
	}
	v, err := get("clockid")
	if err != nil {
		return st, err
	}
	c, err := strconv.ParseInt(v, 10, 32)
	if _, known := timerfdClocks[int32(c)]; err != nil || !known {
		return st, malformed("bad clockid %q", v)
	}
	st.clock = int32(c)
	if v, err = get("ticks"); err != nil {
		return st, err
	}
	if st.ticks, err = strconv.ParseUint(v, 10, 64); err != nil {
		return st, malformed("bad ticks %q", v)
	}
	if v, err = get("settime flags"); err != nil {
		return st, err
	}
	fl, err := strconv.ParseUint(v, 8, 32)
	if err != nil || fl&^timerfdSettimeFlags != 0 {
		return st, malformed("bad settime flags %q", v)
	}
	st.flags = uint32(fl)
	for _, p := range []struct {
		key string
		to  *[2]uint64
	}{{"it_value", &st.value}, {"it_interval", &st.interval}} {
		if v, err = get(p.key); err != nil {
			return st, err
		}
		ts, ok := parseTimespecPair(v)
		if !ok {
			return st, malformed("bad %s %q", p.key, v)
		}
		*p.to = ts
	}
	return st, nil
}

// parseTimespecPair parses "(sec, nsec)" with nsec below one second and
// sec within a time64_t.
func parseTimespecPair(v string) ([2]uint64, bool) {
	in, ok := strings.CutPrefix(v, "(")
	if !ok {
		return [2]uint64{}, false
	}
	if in, ok = strings.CutSuffix(in, ")"); !ok {
		return [2]uint64{}, false
	}
	a, b, ok := strings.Cut(in, ",")
	if !ok {
		return [2]uint64{}, false
	}
	sec, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 63)
	nsec, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
	if err1 != nil || err2 != nil || nsec >= 1e9 {
		return [2]uint64{}, false
	}
	return [2]uint64{sec, nsec}, true
}

// OpenTimerfd creates a timerfd on the entry's clock and arms it with the
// time that was left and the interval; expirations not read at dump time
// are given back with TFD_IOC_SET_TICKS, after timerfd_settime (which
// clears them). An ABSTIME timer is armed at now + the time left on its
// clock, keeping its settime flags. A periodic timer dumped expired
// without its next expiry (see DumpTimerfd) restarts one interval later.
func OpenTimerfd(fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.GetTfd()
	if fe.GetType() != fdinfo.FdTypes_TIMERFD || e == nil {
		return nil, NotKind(fe, "a timerfd")
	}
	bad := func(what string, v any) error {
		return fmt.Errorf("reopen timerfd file id %d: %s %v: %w", fe.GetId(), what, v, images.ErrCorrupt)
	}
	clock := int32(e.GetClockid())
	if _, ok := timerfdClocks[clock]; !ok || e.GetClockid() > math.MaxInt32 {
		return nil, bad("clock", e.GetClockid())
	}
	if e.GetSettimeFlags()&^timerfdSettimeFlags != 0 {
		return nil, bad("settime flags", e.GetSettimeFlags())
	}
	if e.GetVsec() > math.MaxInt64 || e.GetVnsec() >= 1e9 {
		return nil, bad("it_value", [2]uint64{e.GetVsec(), e.GetVnsec()})
	}
	if e.GetIsec() > math.MaxInt64 || e.GetInsec() >= 1e9 {
		return nil, bad("it_interval", [2]uint64{e.GetIsec(), e.GetInsec()})
	}
	its := unix.ItimerSpec{
		Value:    unix.Timespec{Sec: int64(e.GetVsec()), Nsec: int64(e.GetVnsec())},
		Interval: unix.Timespec{Sec: int64(e.GetIsec()), Nsec: int64(e.GetInsec())},
	}
	zero := unix.Timespec{}
	if its.Value == zero && its.Interval != zero && e.GetTicks() != 0 {
		its.Value = its.Interval
	}
	flags := int(e.GetSettimeFlags())
	if flags&unix.TFD_TIMER_ABSTIME != 0 && its.Value != zero {
		var now unix.Timespec
		if err := unix.ClockGettime(timerfdNowClock(clock), &now); err != nil {
			return nil, fmt.Errorf("reopen timerfd file id %d: %w", fe.GetId(), os.NewSyscallError("clock_gettime", err))
		}
		its.Value = addTimespec(now, its.Value)
	}

	fd, err := unix.TimerfdCreate(int(clock), unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("reopen timerfd file id %d on %s: %w", fe.GetId(), timerfdClocks[clock], os.NewSyscallError("timerfd_create", err))
	}
	f := NewAnonFile(fd, "anon_inode:[timerfd]")
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, fmt.Errorf("reopen timerfd file id %d: %w", fe.GetId(), err)
	}
	if err := unix.TimerfdSettime(fd, flags, &its, nil); err != nil {
		return fail(os.NewSyscallError("timerfd_settime", err))
	}
	if t := e.GetTicks(); t != 0 {
		if err := setTimerfdTicks(fd, t); err != nil {
			return fail(err)
		}
	}
	if err := AnonSetfl(fd, e.GetFlags()); err != nil {
		return fail(err)
	}
	return f, nil
}

// timerfdNowClock is the clock that tells the time of a timerfd clock.
func timerfdNowClock(c int32) int32 {
	switch c {
	case unix.CLOCK_REALTIME_ALARM:
		return unix.CLOCK_REALTIME
	case unix.CLOCK_BOOTTIME_ALARM:
		return unix.CLOCK_BOOTTIME
	}
	return c
}

// addTimespec adds two valid timespecs, saturating where the kernel's
// ktime_t would.
func addTimespec(a, b unix.Timespec) unix.Timespec {
	sec, nsec := a.Sec, a.Nsec+b.Nsec
	if nsec >= 1e9 {
		nsec -= 1e9
		sec++
	}
	if b.Sec > math.MaxInt64-sec {
		return unix.Timespec{Sec: math.MaxInt64, Nsec: 0}
	}
	return unix.Timespec{Sec: sec + b.Sec, Nsec: nsec}
}
