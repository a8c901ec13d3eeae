package pstree

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
)

// ErrPidInUse is wrapped when a PID of the image is taken on this host.
var ErrPidInUse = errors.New("pid already in use")

// ZombieWait bounds how long restore waits for the parent of a killed
// process (often init) to reap it: the zombie keeps the pid until then.
const ZombieWait = 5 * time.Second

func CheckPidFree(pid int) error {
	deadline := time.Now().Add(ZombieWait)
	for {
		st, err := proc.ReadStat(pid)
		if err != nil {
			break // no such task
		}
		if st.State != 'Z' || time.Now().After(deadline) {
			return PidInUse(pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if m := pidMax(); m > 0 && pid >= m {
		return fmt.Errorf("pid %d is above this host's pid_max %d (raise /proc/sys/kernel/pid_max)", pid, m)
	}
	return nil
}

// pidMax is /proc/sys/kernel/pid_max, 0 if unknown, read once: a restore
// checks every pid and tid of its images (10,000 for as many threads).
var pidMax = sync.OnceValue(func() int {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil || len(b) == 0 {
		return 0
	}
	m, err := strconv.Atoi(string(b[:len(b)-1]))
	if err != nil {
		return 0
	}
	return m
})

func PidInUse(pid int) error {
	who := " (by a task gone since: try again)"
	if st, err := proc.ReadStat(pid); err == nil {
		who = fmt.Sprintf(" (held by %s, state %c)", st.Comm, st.State)
		if st.State == 'Z' {
			parent := "?"
			if pst, err := proc.ReadStat(st.PPid); err == nil {
				parent = pst.Comm
			}
			who = fmt.Sprintf(" (held by %s, a zombie its parent, pid %d (%s), has not reaped)", st.Comm, st.PPid, parent)
		}
	}
	return fmt.Errorf("restore pid %d: %w%s", pid, ErrPidInUse, who)
}

// Kill ends a task created by the restore and reaps it: stasis is its
// tracer and, once the puppet is gone, its parent (child subreaper).
func Kill(pid int) {
	_ = unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	for {
		_, err := linux.Wait4(pid, &ws, unix.WALL)
		if err != nil || ws.Exited() || ws.Signaled() {
			return
		}
	}
}
