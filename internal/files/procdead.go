package files

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	remap "github.com/checkpoint-restore/go-criu/v8/crit/images/remap-file-path"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
)

// Files inside /proc/PID of a process that had ended and been reaped (a
// cwd in /proc/PID, an fd on /proc/PID/status): their name is gone with
// the process. As in criu, the entry keeps the name and a remap entry of
// type PROCFS the pid; the restore makes a helper task with that pid
// (pstree.AddPidHelper, from DeadPids), opens the files by their name
// while it lives, and ends it before the tree runs: reads give ESRCH
// again, the cwd's link names /proc/PID. Only a restore whose pids are
// the host's can do so (the name is /proc as stasis sees it).

var procPidName = regexp.MustCompile(`^/proc/([0-9]+)(/|$)`)

// deadProc tells whether a file reached through a magic link (target,
// stat st) is inside /proc/PID of a process gone, and returns its name
// and the pid.
func deadProc(target string, st *unix.Stat_t) (string, int, bool) {
	name := strings.TrimSuffix(target, deletedSuffix)
	m := procPidName.FindStringSubmatch(name)
	if m == nil {
		return "", 0, false
	}
	var ps unix.Stat_t
	if unix.Stat("/proc", &ps) != nil || ps.Dev != st.Dev {
		return "", 0, false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid <= 0 {
		return "", 0, false
	}
	var now unix.Stat_t
	if err := unix.Lstat("/proc/"+m[1], &now); !errors.Is(err, unix.ENOENT) {
		return "", 0, false
	}
	return name, pid, true
}

// remapDeadProc records the remap of entry id, a file inside /proc/PID
// of a process gone, and returns its name, if it is one.
func (t *Table) remapDeadProc(id uint32, target string, st *unix.Stat_t) (string, bool) {
	name, pid, ok := deadProc(target, st)
	if !ok {
		return "", false
	}
	rd := remapsOf(t)
	rd.remaps = append(rd.remaps, remapEntry(id, uint32(pid), remap.RemapType_PROCFS))
	return name, true
}

// DeadPids returns the pids whose /proc directory files of the images are
// inside (remap-fpath.img's PROCFS entries): each needs a helper task
// with that pid while the files are opened.
func DeadPids(dir *images.Dir) ([]int, error) {
	if dir == nil || !dir.Has("remap-fpath.img") {
		return nil, nil
	}
	ents, err := images.ReadAll(dir, "remap-fpath.img", func() *remap.RemapFilePathEntry { return &remap.RemapFilePathEntry{} })
	if err != nil {
		return nil, err
	}
	var pids []int
	seen := map[int]bool{}
	for _, e := range ents {
		if e.GetRemapType() != remap.RemapType_PROCFS {
			continue
		}
		pid := int(e.GetRemapId())
		if pid <= 0 || pid > 1<<22 {
			return nil, fmt.Errorf("image remap-fpath.img: file id %d: pid %d: %w", e.GetOrigId(), pid, images.ErrCorrupt)
		}
		if !seen[pid] {
			seen[pid] = true
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// deadProcOpen checks that the helper task of pid, whose /proc directory
// the file of entry id with name is inside, exists with that pid as
// stasis sees it: the name is opened as it is.
func (r *Restorer) deadProcOpen(id uint32, name string, pid int) error {
	if !strings.HasPrefix(name, "/proc/"+strconv.Itoa(pid)) {
		return fmt.Errorf("file id %d (%s): remap of dead pid %d names another pid: %w", id, name, pid, images.ErrCorrupt)
	}
	if h, ok := r.HostPids[pid]; r.HostPids != nil && (!ok || h != pid) {
		return fmt.Errorf("file id %d (%s): a file of a process that had ended, in a restore whose pid %d is not stasis' pid %d: %w",
			id, name, pid, h, ErrUnsupported)
	}
	if _, err := os.Lstat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return fmt.Errorf("file id %d (%s): the helper task of pid %d: %w", id, name, pid, err)
	}
	return nil
}
