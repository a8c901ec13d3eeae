package stasis

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// ActionScripts is criu's --action-script: a Notify that runs each script
// at each action point, as criu does - the last script given first, every
// one even when one fails, with criu's environment:
//
//   - CRTOOLS_SCRIPT_ACTION: the point (pre-dump, post-dump, pre-restore,
//     setup-namespaces, post-setup-namespaces, post-restore, pre-resume,
//     post-resume, network-lock, network-unlock);
//   - CRTOOLS_IMAGE_DIR: the images directory, as /proc/PID/fd/N of a
//     descriptor stasis holds open on it (criu's form; closed before
//     post-resume, as criu's);
//   - CRTOOLS_INIT_PID: the root's pid, once there is one (at dump, the
//     dumped pid; at restore, from setup-namespaces or post-restore on).
//
// The scripts' stdin is /dev/null; they write to stasis' stdout and
// stderr. A script that exits non-zero fails the point. Close releases
// the images directory's descriptor.
type ActionScripts struct {
	scripts   []string
	imagesDir string
	dir       *os.File // opened at the first point: a dump creates the directory
	rootPid   int
}

// NewActionScripts prepares scripts for a dump or restore of imagesDir;
// rootPid is the dumped pid (0 for a restore).
func NewActionScripts(scripts []string, imagesDir string, rootPid int) (*ActionScripts, error) {
	for _, s := range scripts {
		if st, err := os.Stat(s); err != nil {
			return nil, fmt.Errorf("action script: %w", err)
		} else if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("action script %s: not an executable file", s)
		}
	}
	abs, err := filepath.Abs(imagesDir)
	if err != nil {
		return nil, fmt.Errorf("action scripts: images dir: %w", err)
	}
	return &ActionScripts{scripts: slices.Clone(scripts), imagesDir: abs, rootPid: rootPid}, nil
}

// Notify runs the scripts for one action point.
func (a *ActionScripts) Notify(action string, pid int) error {
	if pid > 0 && a.rootPid == 0 {
		a.rootPid = pid
	}
	if a.dir == nil {
		a.dir, _ = os.OpenFile(a.imagesDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	}
	imgDir := a.imagesDir // not there yet: its path
	if a.dir != nil {
		imgDir = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), a.dir.Fd())
	}
	if action == "post-resume" && a.dir != nil {
		// criu has closed its images directory by then: the variable
		// names a descriptor that is gone, and so does stasis'.
		a.dir.Close()
		a.dir = nil
	}
	env := append(os.Environ(), "CRTOOLS_SCRIPT_ACTION="+action, "CRTOOLS_IMAGE_DIR="+imgDir)
	if a.rootPid > 0 {
		env = append(env, "CRTOOLS_INIT_PID="+strconv.Itoa(a.rootPid))
	}
	var errs []error
	for i := len(a.scripts) - 1; i >= 0; i-- {
		cmd := exec.Command(a.scripts[i])
		cmd.Env = env
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			errs = append(errs, fmt.Errorf("action script %s (%s): %w", a.scripts[i], action, err))
		}
	}
	return errors.Join(errs...)
}

// Close releases the images directory's descriptor.
func (a *ActionScripts) Close() error {
	if a.dir == nil {
		return nil
	}
	return a.dir.Close()
}
