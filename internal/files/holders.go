package files

import (
	"fmt"
	"os"
	"strconv"

	"github.com/stasis-cr/stasis/internal/proc"
)

// Holder is an fd of some process on the host, found by FindHolder to
// name, in an error, who else holds an object (the other end of a pipe
// or of a socket, a terminal).
type Holder struct {
	pid int
	fd  string
}

// comm is the holder's command name, or "?" if it is gone.
func (h Holder) comm() string {
	if st, err := proc.ReadStat(h.pid); err == nil {
		return st.Comm
	}
	return "?"
}

func (h Holder) String() string { return fmt.Sprintf("fd %s of pid %d (%s)", h.fd, h.pid, h.comm()) }

// FindHolder looks through the fd table of every process but those skip
// names (nil: none; NotSelf: stasis, which holds copies of what it
// dumps) for the first fd whose /proc link match accepts.
// /proc lists processes, not threads: threads share their fd table.
func FindHolder(skip func(pid int) bool, match func(pid int, fd, target string) bool) (Holder, bool) {
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || skip != nil && skip(pid) {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, f := range fds {
			target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, f.Name()))
			if err != nil {
				continue // gone, or closed meanwhile
			}
			if match(pid, f.Name(), target) {
				return Holder{pid: pid, fd: f.Name()}, true
			}
		}
	}
	return Holder{}, false
}

// NotSelf skips stasis itself, which holds copies of what it dumps.
func NotSelf(pid int) bool { return pid == os.Getpid() }

// Pid is the holder's pid.
func (h Holder) Pid() int { return h.pid }

// Comm is the holder's command name, or "?" if it is gone.
func (h Holder) Comm() string { return h.comm() }
