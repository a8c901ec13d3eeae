package core

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/testutil"
)

const prTimerCreateRestoreIDsGet = 2 // PR_TIMER_CREATE_RESTORE_IDS_GET

// TestPosixTimers dumps a task with timers 1 (SIGALRM every 50 ms), 3
// (SIGUSR1 to its thread every 100 ms) and 4 (SIGEV_NONE, 1000 s), ids 0
// and 2 being deleted, and recreates them in fresh tasks, with the
// kernel's restore-ids mode and with criu's create-and-delete way.
func TestPosixTimers(t *testing.T) {
	src := startVictim(t, "timers")
	var dumped []*timer.PosixTimerEntry
	withHeld(t, src.pid, func(h *held) (err error) {
		dumped, err = DumpPosixTimers(h.t, h.s)
		return err
	})
	checkDumpedTimers(t, dumped, src.pid)

	for _, restoreIDs := range []bool{true, false} {
		t.Run(fmt.Sprintf("restore-ids=%v", restoreIDs), func(t *testing.T) {
			dst := startVictim(t, "target")
			timers := make([]*timer.PosixTimerEntry, len(dumped))
			for i, pt := range dumped {
				timers[i] = proto.Clone(pt).(*timer.PosixTimerEntry)
				if pt.NotifyThreadId != nil {
					// Restore keeps pids; this test moves to another task.
					timers[i].NotifyThreadId = proto.Int32(int32(dst.pid))
				}
			}
			var again []*timer.PosixTimerEntry
			var mode uint64
			withHeld(t, dst.pid, func(h *held) (err error) {
				if err := restorePosixTimers(h.task(), timers, restoreIDs); err != nil {
					return err
				}
				if restoreIDs {
					// This kernel (6.18) has it: the fallback is not what ran.
					if on, err := timerRestoreIDs(h.task(), timerRestoreIDsOff); err != nil || !on {
						return fmt.Errorf("PR_TIMER_CREATE_RESTORE_IDS: %v %v", on, err)
					}
				}
				if mode, err = h.t.Call("prctl(PR_TIMER_CREATE_RESTORE_IDS_GET)", unix.SYS_PRCTL, unix.PR_TIMER_CREATE_RESTORE_IDS, prTimerCreateRestoreIDsGet); err != nil {
					return err
				}
				again, err = DumpPosixTimers(h.t, h.s)
				return err
			})
			if mode != 0 {
				t.Errorf("restore-ids mode left on")
			}
			checkDumpedTimers(t, again, dst.pid)
			checkTimerSignals(t, dst)
		})
	}
}

// checkDumpedTimers compares what /proc and the injected calls tell with
// what the victim set up.
func checkDumpedTimers(t *testing.T, got []*timer.PosixTimerEntry, pid int) {
	t.Helper()
	if len(got) != 3 || got[0].GetItId() != 1 || got[1].GetItId() != 3 || got[2].GetItId() != 4 {
		t.Fatalf("timers of pid %d: %v", pid, got)
	}
	for _, c := range []struct {
		pt             *timer.PosixTimerEntry
		signo, notify  uint32
		sival, every   uint64
		minNow, maxNow uint64 // nanoseconds
	}{
		{got[0], uint32(unix.SIGALRM), sigevSignal, 0x1234, 50e6, 1, 50e6},
		{got[1], uint32(unix.SIGUSR1), sigevThreadID, 0x5678, 100e6, 1, 100e6},
		{got[2], 0, sigevNone, 0, 0, 990e9, 1000e9},
	} {
		pt := c.pt
		every := pt.GetIsec()*1e9 + pt.GetInsec()
		now := pt.GetVsec()*1e9 + pt.GetVnsec()
		switch {
		case pt.GetClockId() != unix.CLOCK_MONOTONIC:
			t.Errorf("timer %d: clock %d", pt.GetItId(), pt.GetClockId())
		case c.notify != sigevNone && pt.GetSiSigno() != c.signo:
			t.Errorf("timer %d: signal %d, want %d", pt.GetItId(), pt.GetSiSigno(), c.signo)
		case pt.GetItSigevNotify() != c.notify || pt.GetSivalPtr() != c.sival:
			t.Errorf("timer %d: notify %d sival %#x, want %d %#x", pt.GetItId(), pt.GetItSigevNotify(), pt.GetSivalPtr(), c.notify, c.sival)
		case every != c.every || now < c.minNow || now > c.maxNow:
			t.Errorf("timer %d: every %d ns, next in %d ns; want every %d, next in %d-%d", pt.GetItId(), every, now, c.every, c.minNow, c.maxNow)
		}
	}
	if got[1].GetNotifyThreadId() != int32(pid) {
		t.Errorf("timer 3 notifies tid %d, want %d", got[1].GetNotifyThreadId(), pid)
	}
}

// checkTimerSignals counts the signals the running task gets in a second.
func checkTimerSignals(t *testing.T, v *victim) {
	t.Helper()
	var n1, n2 [2]int64
	var val [2]uint64
	var id [2]int
	parse := func(s string, n *[2]int64) {
		if _, err := fmt.Sscanf(s, "alrm %d %x %d usr1 %d %x %d", &n[0], &val[0], &id[0], &n[1], &val[1], &id[1]); err != nil {
			t.Fatalf("victim says %q: %v", s, err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	parse(v.ask(t, 's'), &n1)
	time.Sleep(time.Second)
	parse(v.ask(t, 's'), &n2)
	alrm, usr1 := n2[0]-n1[0], n2[1]-n1[1]
	if alrm < 14 || alrm > 26 || usr1 < 7 || usr1 > 13 {
		t.Errorf("in 1 s: %d SIGALRM (every 50 ms), %d SIGUSR1 (every 100 ms)", alrm, usr1)
	}
	if val != [2]uint64{0x1234, 0x5678} || id != [2]int{1, 3} {
		t.Errorf("signal values %#x, timer ids %v; want 0x1234 0x5678, 1 3", val, id)
	}
}

func TestParsePosixTimers(t *testing.T) {
	const text = `ID: 7
signal: 14/00000000deadbeef
notify: thread/pid.10
ClockID: -6
ID: 2
signal: 10/0000000000000000
notify: signal/tid.11
ClockID: 1
ID: 3
signal: 0/0000000000000000
notify: none/pid.10
ClockID: 0
`
	got, err := parsePosixTimers(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []*timer.PosixTimerEntry{
		{ItId: proto.Uint32(2), SiSigno: proto.Uint32(10), SivalPtr: proto.Uint64(0), ItSigevNotify: proto.Uint32(sigevThreadID), NotifyThreadId: proto.Int32(11), ClockId: proto.Uint32(1)},
		{ItId: proto.Uint32(3), SiSigno: proto.Uint32(0), SivalPtr: proto.Uint64(0), ItSigevNotify: proto.Uint32(sigevNone), ClockId: proto.Uint32(0)},
		{ItId: proto.Uint32(7), SiSigno: proto.Uint32(14), SivalPtr: proto.Uint64(0xdeadbeef), ItSigevNotify: proto.Uint32(sigevThread), ClockId: proto.Uint32(0xfffffffa)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d timers", len(got))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("timer %d: %v, want %v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{
		"signal: 14/0\n",                     // before ID
		"ID: x\n",                            // not a number
		"ID: 1\nsignal: 14\n",                // no sival
		"ID: 1\nnotify: signal\n",            // no pid
		"ID: 1\nnotify: bogus/pid.1\n",       // unknown type
		"ID: 1\nsignal: 14/0\nClockID: 0\n",  // no notify
		"ID: 1\nno colon here\n",             // garbage
		"ID: 4294967296\n",                   // out of range
		"ID: 1\nsignal: 14/0\nClockID: x\n",  // clock
		"ID: 1\nsignal: 14/zz\nClockID: 0\n", // sival
	} {
		if _, err := parsePosixTimers(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestParsePosixTimersSelf(t *testing.T) {
	// A process without timers has an empty file.
	f, err := os.Open("/proc/self/timers")
	if err != nil {
		testutil.SkipOrFail(t, "no /proc/PID/timers (CONFIG_CHECKPOINT_RESTORE): %v", err)
	}
	defer f.Close()
	if _, err := parsePosixTimers(f); err != nil {
		t.Fatal(err)
	}
}

func TestValidatePosixTimers(t *testing.T) {
	pt := func(id uint32) *timer.PosixTimerEntry { return &timer.PosixTimerEntry{ItId: proto.Uint32(id)} }
	if err := ValidatePosixTimers([]*timer.PosixTimerEntry{pt(1), pt(5)}); err != nil {
		t.Fatal(err)
	}
	ns := pt(2)
	ns.Vnsec = proto.Uint64(1e9)
	sig := pt(3)
	sig.SiSigno = proto.Uint32(65)
	for _, bad := range [][]*timer.PosixTimerEntry{
		{pt(1), pt(1)},
		{pt(1 << 31)},
		{ns},
		{sig},
	} {
		if err := ValidatePosixTimers(bad); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}
