package core

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/ptrace"
	"github.com/stasis-cr/stasis/internal/remote"
)

// POSIX timer ABI missing from x/sys/unix.
const (
	sigevSignal   = 0 // SIGEV_SIGNAL, include/uapi/asm-generic/siginfo.h
	sigevNone     = 1 // SIGEV_NONE
	sigevThread   = 2 // SIGEV_THREAD
	sigevThreadID = 4 // SIGEV_THREAD_ID
	sigeventSize  = 64
	itimerspecLen = 32 // struct __kernel_itimerspec: it_interval, it_value

	timerRestoreIDsOn  = 1 // PR_TIMER_CREATE_RESTORE_IDS_ON, include/uapi/linux/prctl.h
	timerRestoreIDsOff = 0 // PR_TIMER_CREATE_RESTORE_IDS_OFF

	// Scratch layout of the timer calls.
	timerSigevOff = 0
	timerIDOff    = 64
	timerSpecOff  = 128

	// maxTimerID is the largest timer id (the kernel hands out 0..INT_MAX).
	maxTimerID = 1<<31 - 1
	// linearTimerLimit bounds the create-and-delete fallback: each step
	// is two injected calls (~60 us), so a very sparse id would take
	// minutes; such a dump needs PR_TIMER_CREATE_RESTORE_IDS (Linux 6.15).
	linearTimerLimit = 1 << 16
)

// DumpPosixTimers returns the POSIX timers of the process t belongs to
// (timer_create(2) timers are per process), sorted by id, for
// task_timers_entry.posix. /proc/PID/timers gives their ids and
// notification; injected timer_gettime and timer_getoverrun give the
// remaining time, interval and overrun count.
//
// notify_thread_id is a tid as seen in stasis's /proc (its pid namespace);
// a dump of a nested pid namespace must translate it.
func DumpPosixTimers(t *ptrace.Task, s *ptrace.Scratch) ([]*timer.PosixTimerEntry, error) {
	f, err := linux.OpenFile(fmt.Sprintf("/proc/%d/timers", t.Tid), os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("posix timers of pid %d: %w", t.Tid, err)
	}
	defer f.Close()
	timers, err := parsePosixTimers(f)
	if err != nil {
		return nil, fmt.Errorf("posix timers of pid %d: %s: %w", t.Tid, f.Name(), err)
	}
	for _, pt := range timers {
		if err := dumpTimerState(t, s, pt); err != nil {
			return nil, fmt.Errorf("posix timer %d of pid %d: %w", pt.GetItId(), t.Tid, err)
		}
	}
	return timers, nil
}

func dumpTimerState(t *ptrace.Task, s *ptrace.Scratch, pt *timer.PosixTimerEntry) error {
	id := uint64(pt.GetItId())
	if _, err := t.Call("timer_gettime", unix.SYS_TIMER_GETTIME, id, s.Addr+timerSpecOff); err != nil {
		return err
	}
	b, err := s.Get(timerSpecOff, itimerspecLen)
	if err != nil {
		return err
	}
	le := binary.LittleEndian
	pt.Isec, pt.Insec = proto.Uint64(le.Uint64(b[0:])), proto.Uint64(le.Uint64(b[8:]))
	pt.Vsec, pt.Vnsec = proto.Uint64(le.Uint64(b[16:])), proto.Uint64(le.Uint64(b[24:]))
	ov, err := t.Call("timer_getoverrun", unix.SYS_TIMER_GETOVERRUN, id)
	pt.Overrun = proto.Uint32(uint32(ov))
	return err
}

// parsePosixTimers parses /proc/PID/timers (fs/proc/base.c show_timer),
// four lines per timer:
//
//	ID: 1
//	signal: 14/00000000deadbeef
//	notify: signal/pid.1234     (or thread/..., none/..., signal/tid.1235)
//	ClockID: 1
//
// The value fields (interval, remaining time, overrun) stay unset.
func parsePosixTimers(r io.Reader) ([]*timer.PosixTimerEntry, error) {
	var out []*timer.PosixTimerEntry
	var cur *timer.PosixTimerEntry
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			return nil, fmt.Errorf("line %d: no ':' in %q", n, sc.Text())
		}
		val = strings.TrimSpace(val)
		if key == "ID" {
			cur = &timer.PosixTimerEntry{}
			out = append(out, cur)
		} else if cur == nil {
			return nil, fmt.Errorf("line %d: %s before ID", n, key)
		}
		if err := parseTimerField(cur, key, val); err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", n, key, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, pt := range out {
		if pt.ItSigevNotify == nil || pt.SiSigno == nil || pt.ClockId == nil {
			return nil, fmt.Errorf("timer %d: incomplete", pt.GetItId())
		}
	}
	slices.SortFunc(out, func(a, b *timer.PosixTimerEntry) int { return int(a.GetItId()) - int(b.GetItId()) })
	return out, nil
}

func parseTimerField(pt *timer.PosixTimerEntry, key, val string) error {
	switch key {
	case "ID":
		id, err := strconv.ParseUint(val, 10, 31)
		pt.ItId = proto.Uint32(uint32(id))
		return err
	case "signal":
		sig, ptr, ok := strings.Cut(val, "/")
		if !ok {
			return fmt.Errorf("%q: no '/'", val)
		}
		signo, err := strconv.ParseUint(sig, 10, 32)
		if err != nil {
			return err
		}
		sival, err := strconv.ParseUint(strings.TrimPrefix(ptr, "0x"), 16, 64)
		pt.SiSigno, pt.SivalPtr = proto.Uint32(uint32(signo)), proto.Uint64(sival)
		return err
	case "notify":
		return parseTimerNotify(pt, val)
	case "ClockID":
		// CPU-time clocks are negative ids; the image keeps the bits.
		c, err := strconv.ParseInt(val, 10, 32)
		pt.ClockId = proto.Uint32(uint32(int32(c)))
		return err
	}
	return nil // lines a later kernel may add
}

// parseTimerNotify parses "TYPE/pid.N" or "TYPE/tid.N". The kernel prints
// SIGEV_THREAD_ID as "signal/tid"; like criu, a tid makes the notify
// SIGEV_THREAD_ID whatever the type.
func parseTimerNotify(pt *timer.PosixTimerEntry, val string) error {
	kind, who, ok := strings.Cut(val, "/")
	idKind, num, ok2 := strings.Cut(who, ".")
	if !ok || !ok2 {
		return fmt.Errorf("%q: want TYPE/pid.N or TYPE/tid.N", val)
	}
	id, err := strconv.ParseInt(num, 10, 32)
	if err != nil {
		return err
	}
	var notify uint32
	switch {
	case idKind == "tid":
		notify = sigevThreadID
		pt.NotifyThreadId = proto.Int32(int32(id))
	case kind == "signal":
		notify = sigevSignal
	case kind == "none":
		notify = sigevNone
	case kind == "thread":
		notify = sigevThread
	default:
		return fmt.Errorf("%q: unknown notification %q", val, kind)
	}
	pt.ItSigevNotify = proto.Uint32(notify)
	return nil
}

// ValidatePosixTimers checks timer entries before anything is created.
func ValidatePosixTimers(timers []*timer.PosixTimerEntry) error {
	seen := make(map[uint32]bool, len(timers))
	for _, pt := range timers {
		id := pt.GetItId()
		switch {
		case id > maxTimerID:
			return fmt.Errorf("posix timer id %d out of range", id)
		case seen[id]:
			return fmt.Errorf("posix timer id %d twice", id)
		case pt.GetInsec() >= 1e9 || pt.GetVnsec() >= 1e9:
			return fmt.Errorf("posix timer %d: nanoseconds out of range", id)
		case pt.GetSiSigno() > sigMax:
			return fmt.Errorf("posix timer %d: signal %d", id, pt.GetSiSigno())
		}
		seen[id] = true
	}
	return nil
}

// RestorePosixTimers creates the timers in the process of t with their
// dumped ids, then arms them with the remaining time and interval. Run it
// after the threads exist (a SIGEV_THREAD_ID timer names one) and as late
// as possible: the timers run from here on while the restore goes on.
//
// The ids come from prctl(PR_TIMER_CREATE_RESTORE_IDS) when the kernel
// has it (6.15+): timer_create then takes the wanted id from *timerid.
// Otherwise criu's way: ids are handed out in increasing order, so create
// timers until the wanted id comes out, deleting the others. That needs a
// process without timers created since its last exec (the puppet).
func RestorePosixTimers(t remote.Task, timers []*timer.PosixTimerEntry) error {
	return restorePosixTimers(t, timers, true)
}

func restorePosixTimers(t remote.Task, timers []*timer.PosixTimerEntry, restoreIDs bool) (err error) {
	if len(timers) == 0 {
		return nil
	}
	if err := ValidatePosixTimers(timers); err != nil {
		return fmt.Errorf("posix timers of pid %d: %w", t.HostPid(), err)
	}
	sorted := slices.Clone(timers)
	slices.SortFunc(sorted, func(a, b *timer.PosixTimerEntry) int { return int(a.GetItId()) - int(b.GetItId()) })
	create := createTimerLinear
	if restoreIDs {
		on, onErr := timerRestoreIDs(t, timerRestoreIDsOn)
		if onErr != nil {
			return onErr
		}
		if on {
			create = createTimerWithID
			defer func() {
				if _, offErr := timerRestoreIDs(t, timerRestoreIDsOff); err == nil {
					err = offErr
				}
			}()
		}
	}
	for _, pt := range sorted {
		if err := create(t, pt); err != nil {
			return fmt.Errorf("posix timer %d of pid %d: %w", pt.GetItId(), t.HostPid(), err)
		}
		if err := armTimer(t, pt); err != nil {
			return fmt.Errorf("posix timer %d of pid %d: %w", pt.GetItId(), t.HostPid(), err)
		}
	}
	return nil
}

// timerRestoreIDs switches timer_create's id mode for the whole process;
// false means this kernel does not have it (EINVAL).
func timerRestoreIDs(t remote.Task, v uint64) (bool, error) {
	_, err := t.Call(fmt.Sprintf("prctl(PR_TIMER_CREATE_RESTORE_IDS, %d)", v), unix.SYS_PRCTL, unix.PR_TIMER_CREATE_RESTORE_IDS, v, 0, 0, 0)
	if errors.Is(err, unix.EINVAL) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// putSigevent writes the timer's struct sigevent: sigev_value,
// sigev_signo, sigev_notify, then sigev_notify_thread_id.
func putSigevent(t remote.Task, pt *timer.PosixTimerEntry) (uint64, error) {
	b := make([]byte, sigeventSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], pt.GetSivalPtr())
	le.PutUint32(b[8:], pt.GetSiSigno())
	le.PutUint32(b[12:], pt.GetItSigevNotify())
	le.PutUint32(b[16:], uint32(pt.GetNotifyThreadId()))
	return t.Put(timerSigevOff, b)
}

// timerCreate injects timer_create; with the restore-ids mode on, the
// kernel reads the wanted id from the same place it writes the new id to.
func timerCreate(t remote.Task, pt *timer.PosixTimerEntry, want uint32) (uint32, error) {
	sev, err := putSigevent(t, pt)
	if err != nil {
		return 0, err
	}
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, want)
	idAddr, err := t.Put(timerIDOff, b)
	if err != nil {
		return 0, err
	}
	if _, err := t.Call("timer_create", unix.SYS_TIMER_CREATE, uint64(pt.GetClockId()), sev, idAddr); err != nil {
		return 0, err
	}
	if b, err = t.Get(timerIDOff, 4); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func createTimerWithID(t remote.Task, pt *timer.PosixTimerEntry) error {
	got, err := timerCreate(t, pt, pt.GetItId())
	if err == nil && got != pt.GetItId() {
		err = fmt.Errorf("timer_create gave id %d", got)
	}
	return err
}

func createTimerLinear(t remote.Task, pt *timer.PosixTimerEntry) error {
	for range linearTimerLimit {
		got, err := timerCreate(t, pt, 0)
		switch {
		case err != nil:
			return err
		case got == pt.GetItId():
			return nil
		case got > pt.GetItId():
			return fmt.Errorf("timer_create gave id %d past the wanted one: the process had timers already", got)
		}
		if _, err := t.Call("timer_delete", unix.SYS_TIMER_DELETE, uint64(got)); err != nil {
			return err
		}
	}
	return fmt.Errorf("id not reached after %d timer_create calls: needs PR_TIMER_CREATE_RESTORE_IDS (Linux 6.15)", linearTimerLimit)
}

// armTimer sets the remaining time (relative: timer_gettime gave it so,
// whatever flags the timer was armed with) and the interval. A zero
// remaining time means disarmed.
func armTimer(t remote.Task, pt *timer.PosixTimerEntry) error {
	if pt.GetVsec() == 0 && pt.GetVnsec() == 0 {
		return nil
	}
	b := make([]byte, itimerspecLen)
	le := binary.LittleEndian
	le.PutUint64(b[0:], pt.GetIsec())
	le.PutUint64(b[8:], pt.GetInsec())
	le.PutUint64(b[16:], pt.GetVsec())
	le.PutUint64(b[24:], pt.GetVnsec())
	a, err := t.Put(timerSpecOff, b)
	if err != nil {
		return err
	}
	_, err = t.Call("timer_settime", unix.SYS_TIMER_SETTIME, uint64(pt.GetItId()), 0, a, 0)
	return err
}

// siCodeTimer is SI_TIMER (include/uapi/asm-generic/siginfo.h).
const siCodeTimer = -2

// HandOverTimerSignals prepares the pending signal of each periodic POSIX
// timer for restore. Such a signal is the timer's own preallocated one:
// while it stays pending the kernel counts further expirations as
// overruns, and reports them in si_overrun when it is delivered. A copy
// queued by stasis would be a plain signal beside it, never counting. So
// the copy is dropped from the queues (tc's shared one and the threads'
// own in cores), and the timer is armed to expire at once: the kernel
// queues its own signal again, which then counts overruns from the
// restore on (those from before the dump are lost: the kernel does not
// show them). Entries are changed in place.
func HandOverTimerSignals(tc *criucore.TaskCoreEntry, cores []*criucore.CoreEntry) {
	periodic := map[int32]*timer.PosixTimerEntry{}
	for _, pt := range tc.GetTimers().GetPosix() {
		if pt.GetIsec() != 0 || pt.GetInsec() != 0 {
			periodic[int32(pt.GetItId())] = pt
		}
	}
	if len(periodic) == 0 {
		return
	}
	drop := func(q *siginfo.SignalQueueEntry) {
		if q == nil {
			return
		}
		kept := q.Signals[:0]
		for _, e := range q.Signals {
			si := e.GetSiginfo()
			code := int32(binary.LittleEndian.Uint32(si[8:]))
			id := int32(binary.LittleEndian.Uint32(si[16:]))
			if pt := periodic[id]; code == siCodeTimer && pt != nil {
				pt.Vsec, pt.Vnsec = proto.Uint64(0), proto.Uint64(1)
				continue
			}
			kept = append(kept, e)
		}
		q.Signals = kept
	}
	drop(tc.GetSignalsS())
	for _, c := range cores {
		drop(c.GetThreadCore().GetSignalsP())
	}
}
