package pstree

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// EndZombie ends t, a zombie of the images, with its name (comm) and
// exit status, which its parent will collect. s is t's scratch memory.
func EndZombie(t *ptrace.Task, s *ptrace.Scratch, comm string, status uint32) error {
	// A zombie keeps only its name, pid, ids and exit status.
	name := make([]byte, 16)
	copy(name[:15], comm)
	a, err := s.Put(0, name)
	if err != nil {
		return err
	}
	if _, err := t.Call("prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, a); err != nil {
		return err
	}
	return die(t, status)
}

// EndHelper ends t, the helper with pid in its namespace (AddHelpers),
// and has its parent (with scratch memory ps) reap it right away.
func EndHelper(t *ptrace.Task, pid int, parent *ptrace.Task, ps *ptrace.Scratch) error {
	if err := die(t, 0); err != nil {
		return err
	}
	if _, err := parent.Call("wait4 helper", unix.SYS_WAIT4, uint64(pid), 0, unix.WALL, 0); err != nil {
		return err
	}
	return dropSIGCHLD(parent, ps)
}

// die makes the task exit with the given wait status: exit code in bits
// 8-15, or a signal in bits 0-6.
func die(t *ptrace.Task, status uint32) error {
	pid := t.Tid
	if sig := unix.Signal(status & 0x7f); sig != 0 {
		if err := ptrace.SetSigmask(pid, 0); err != nil {
			return err
		}
		if err := unix.Kill(pid, sig); err != nil {
			return err
		}
		return ptrace.ContUntilExit(pid, sig)
	}
	return ptrace.InjectExit(t, uint64(status>>8&0xff))
}

// dropSIGCHLD consumes the SIGCHLDs that restore's own helpers caused.
func dropSIGCHLD(t *ptrace.Task, s *ptrace.Scratch) error {
	set := []byte{0, 0, 0, 0, 0, 0, 0, 0}
	set[(unix.SIGCHLD-1)/8] = 1 << ((unix.SIGCHLD - 1) % 8)
	a, err := s.Put(0, append(set, make([]byte, 16)...)) // sigset, then a zero timespec
	if err != nil {
		return err
	}
	for {
		if _, err := t.Syscall(unix.SYS_RT_SIGTIMEDWAIT, a, 0, a+8, 8); err != nil {
			return nil // EAGAIN: none left
		}
	}
}

// Reap waits until none of tids (killed tasks the restore created)
// exists any more, for at most ZombieWait: stasis reaps each as its
// tracer, and as the subreaper that the orphaned zombies of the tree end
// up with.
func Reap(tids []int) {
	// Reap in passes over all of them: a leader cannot be reaped before
	// its threads are, so waiting for each in turn would spend the whole
	// deadline on the first leader of a multithreaded process.
	deadline := time.Now().Add(ZombieWait)
	for len(tids) > 0 && time.Now().Before(deadline) {
		left := tids[:0]
		for _, tid := range tids {
			var ws unix.WaitStatus
			_, err := linux.Wait4(tid, &ws, unix.WALL|unix.WNOHANG)
			if errors.Is(err, unix.ECHILD) {
				if _, serr := os.Stat(fmt.Sprintf("/proc/%d", tid)); serr != nil {
					continue // gone
				}
				if st, serr := proc.ReadStat(tid); serr == nil && st.State == 'Z' {
					continue // dead, a zombie of its parent (a sibling restore's root)
				}
			}
			left = append(left, tid)
		}
		tids = left
		time.Sleep(time.Millisecond)
	}
}
