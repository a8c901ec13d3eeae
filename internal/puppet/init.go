package puppet

import (
	"encoding/binary"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// InitArg is the argument of the init stasis runs as pid 1 of a pid
// namespace it restores into (see RunInit).
const InitArg = "__stasis_init"

// StartInit turns the namespace's pid 1, t, a clone of the puppet, into
// stasis' init: an exec of stasis itself that reaps orphans and exits
// with the root's status when the root exits.
func StartInit(t *ptrace.Task, s *ptrace.Scratch, channelFd, root int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if _, err := t.Call("close channel", unix.SYS_CLOSE, uint64(channelFd)); err != nil {
		return err
	}
	strs := []string{self, InitArg, strconv.Itoa(root)}
	var blob []byte
	var ptrs []uint64
	for _, str := range strs {
		ptrs = append(ptrs, s.Addr+uint64(len(blob)))
		blob = append(blob, str...)
		blob = append(blob, 0)
	}
	argvOff := (uint64(len(blob)) + 7) &^ 7
	blob = append(blob, make([]byte, argvOff-uint64(len(blob)))...)
	for _, p := range append(ptrs, 0) {
		blob = binary.LittleEndian.AppendUint64(blob, p)
	}
	if _, err := s.Put(0, blob); err != nil {
		return err
	}
	argv := s.Addr + argvOff
	envp := argv + uint64(8*len(strs)) // the NULL that ends argv
	if err := ptrace.InjectExec(t, ptrs[0], argv, envp); err != nil {
		return err
	}
	return ptrace.Detach(t.Tid, 0)
}

// RunInit is the main of stasis' init in a restored pid namespace: it
// reaps every child and, when the restored root (pid root in the
// namespace) exits, exits with the same status, which `stasis restore`
// reports.
func RunInit(root int) int {
	for {
		var ws unix.WaitStatus
		pid, err := linux.Wait4(-1, &ws, 0)
		if err != nil {
			return 0
		}
		if pid == root {
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
}
