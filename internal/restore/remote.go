package restore

import (
	"os"

	"github.com/stasis-cr/stasis/internal/remote"
)

// taskRestorer is the remote.Task the resources' task-side steps get.
var _ remote.Task = (*taskRestorer)(nil)

func (tr *taskRestorer) Pid() int     { return tr.img.pid() }
func (tr *taskRestorer) HostPid() int { return tr.t.Tid }

func (tr *taskRestorer) Call(name string, nr uintptr, args ...uint64) (uint64, error) {
	return tr.t.Call(name, nr, args...)
}

func (tr *taskRestorer) Put(off uint64, b []byte) (uint64, error) { return tr.s.Put(off, b) }

func (tr *taskRestorer) Get(off uint64, n int) ([]byte, error) { return tr.s.Get(off, n) }

func (tr *taskRestorer) PassFile(f *os.File) (int, error) {
	fd, err := tr.passFile(f)
	return int(fd), err
}
