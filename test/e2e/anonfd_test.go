package e2e

import (
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestAnonFds: eventfds (counter, semaphore mode, O_NONBLOCK), a signalfd
// (its mask; a SIGUSR1 sent after the restore is read from it), timerfds
// (a 50 ms periodic one keeps its interval and period, a 100 s one-shot
// its time left) and epolls (items with their events and data, EPOLLET,
// EPOLLONESHOT fired and not fired, an epoll inside an epoll) come back
// and work (anonfd.c checks them from the inside).
func TestAnonFds(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "anonfd", strconv.Itoa(os.Getpid()))
	v.WaitReady(t)
	// Let the periodic timer expire unread a few times before the dump.
	time.Sleep(120 * time.Millisecond)
	testutil.DumpRestore(t, v)
	v.Signal(t, unix.SIGUSR1)
	testutil.WaitFor(t, 2*time.Second, "SIGUSR1 pending in ShdPnd", func() bool {
		st, err := testutil.Status(v.Pid)
		return err == nil && pendingBit(st["ShdPnd"], int(unix.SIGUSR1))
	})
	v.TermAndCheck(t)
}
