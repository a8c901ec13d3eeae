// Package benchenv is the set-up the stand-alone benches under bench/
// (lazy, migration) share: a subreaper with no inherited fd, a temp dir,
// the stasis binary and a victim built from test/victims.
package benchenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Env is a bench's temp dir and what it built there.
type Env struct {
	Tmp    string // removed by Close
	Bin    string // the stasis binary
	Victim string // the victim built from test/victims/NAME.c
}

// Setup makes the process a subreaper whose fds above 2 are close-on-exec
// (an fd inherited from the shell would be a pipe the victim shares with
// a process outside its tree), a temp dir named after prefix, and builds
// stasis there unless bin names one, and victim (test/victims/VICTIM.c).
// Run from the module's root.
func Setup(prefix, bin, victim string) (*Env, error) {
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range ents {
			if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
				unix.CloseOnExec(fd)
			}
		}
	}
	tmp, err := os.MkdirTemp("", prefix)
	if err != nil {
		return nil, err
	}
	e := &Env{Tmp: tmp, Bin: bin, Victim: filepath.Join(tmp, victim)}
	if e.Bin == "" {
		e.Bin = filepath.Join(tmp, "stasis")
		if out, err := exec.Command("go", "build", "-o", e.Bin, "./cmd/stasis").CombinedOutput(); err != nil {
			e.Close()
			return nil, fmt.Errorf("build stasis: %v\n%s", err, out)
		}
	}
	if out, err := exec.Command("gcc", "-O2", "-o", e.Victim, "test/victims/"+victim+".c").CombinedOutput(); err != nil {
		e.Close()
		return nil, fmt.Errorf("build victim: %v\n%s", err, out)
	}
	return e, nil
}

// Close removes the temp dir.
func (e *Env) Close() { os.RemoveAll(e.Tmp) }
