package restore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// Options selects how a checkpoint is restored.
type Options struct {
	ImagesDir string
	WorkDir   string
	PidFile   string
	ShellJob  bool
	Log       *slog.Logger
}

// Restored is a restored tree that runs on its own.
type Restored struct {
	Pid int // pid of the root task (host view)
}

// Wait waits for the restored root to exit and returns its exit code,
// 128+signal if it was killed, as a shell reports it. The root is a child
// of the restoring process, so only that process can wait for it.
func (r *Restored) Wait() (int, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(r.Pid, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("wait for restored pid %d: %w", r.Pid, err)
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus(), nil
		case ws.Signaled():
			return 128 + int(ws.Signal()), nil
		}
	}
}

type restorer struct {
	opts   Options
	log    *slog.Logger
	imgs   *imageSet
	puppet *puppet
	tasks  []*ptrace.Task // created so far, killed on failure
}

// Restore restores the checkpoint in opts.ImagesDir and returns once the
// tree runs.
func Restore(opts Options) (*Restored, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	r := &restorer{opts: opts, log: opts.Log}
	var res *Restored
	err := ptrace.RunLocked(func() error {
		var err error
		res, err = r.run()
		return err
	})
	return res, err
}

func (r *restorer) run() (_ *Restored, err error) {
	if r.imgs, err = readImages(r.opts.ImagesDir); err != nil {
		return nil, err
	}
	root := r.imgs.root
	pid := int(root.pstree.GetPid())
	if err := checkPidFree(pid); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			r.rollback()
		}
	}()
	// The restored root becomes a child of stasis when the puppet it was
	// cloned from is gone, so that restore can wait for it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become child subreaper: %w", err)
	}
	if r.puppet, err = startPuppet(); err != nil {
		return nil, err
	}
	t, err := r.puppet.clone(pid)
	if err != nil {
		if errors.Is(err, ErrPidInUse) {
			return nil, pidInUse(pid)
		}
		return nil, err
	}
	r.tasks = append(r.tasks, t)
	r.puppet.kill()
	r.puppet = nil
	tr := &taskRestorer{r: r, t: t, img: root}
	if err := tr.restore(); err != nil {
		return nil, err
	}
	r.tasks = nil
	if r.opts.PidFile != "" {
		if err := os.WriteFile(r.opts.PidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			return &Restored{Pid: pid}, fmt.Errorf("write pidfile: %w", err)
		}
	}
	r.log.Info("restore done", "pid", pid)
	return &Restored{Pid: pid}, nil
}

// rollback kills everything the restore created.
func (r *restorer) rollback() {
	for _, t := range r.tasks {
		kill(t.Tid)
	}
	r.tasks = nil
	if r.puppet != nil {
		r.puppet.kill()
		r.puppet = nil
	}
}

// zombieWait bounds how long restore waits for the parent of a killed
// process (often init) to reap it: the zombie keeps the pid until then.
const zombieWait = 5 * time.Second

func checkPidFree(pid int) error {
	deadline := time.Now().Add(zombieWait)
	for {
		st, err := proc.ReadStat(pid)
		if err != nil {
			break // no such task
		}
		if st.State != 'Z' || time.Now().After(deadline) {
			return pidInUse(pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	max, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err == nil {
		if m, err := strconv.Atoi(string(max[:len(max)-1])); err == nil && pid >= m {
			return fmt.Errorf("pid %d is above this host's pid_max %d (raise /proc/sys/kernel/pid_max)", pid, m)
		}
	}
	return nil
}

func pidInUse(pid int) error {
	who := ""
	if st, err := proc.ReadStat(pid); err == nil {
		who = fmt.Sprintf(" (held by %s, state %c)", st.Comm, st.State)
	}
	return fmt.Errorf("restore pid %d: %w%s", pid, ErrPidInUse, who)
}
