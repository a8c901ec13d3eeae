package files

import (
	"fmt"
	"os"
	"strconv"

	"github.com/stasis-cr/stasis/internal/proc"
)

// holder is an fd of some process on the host, found by findHolder to
// name, in an error, who else holds an object.
type holder struct {
	pid int
	fd  string
}

// comm is the holder's command name, or "?" if it is gone.
func (h holder) comm() string {
	if st, err := proc.ReadStat(h.pid); err == nil {
		return st.Comm
	}
	return "?"
}

func (h holder) String() string { return fmt.Sprintf("fd %s of pid %d (%s)", h.fd, h.pid, h.comm()) }

// findHolder looks through the fd table of every process but those skip
// names for the first fd whose /proc link match accepts.
// /proc lists processes, not threads: threads share their fd table.
func findHolder(skip func(pid int) bool, match func(pid int, fd, target string) bool) (holder, bool) {
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
				return holder{pid: pid, fd: f.Name()}, true
			}
		}
	}
	return holder{}, false
}

// notSelf skips stasis itself, which holds copies of what it dumps.
func notSelf(pid int) bool { return pid == os.Getpid() }
