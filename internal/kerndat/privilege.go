package kerndat

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

var capNames = map[int]string{
	unix.CAP_DAC_READ_SEARCH:    "CAP_DAC_READ_SEARCH",
	unix.CAP_SYS_PTRACE:         "CAP_SYS_PTRACE",
	unix.CAP_SYS_ADMIN:          "CAP_SYS_ADMIN",
	unix.CAP_CHECKPOINT_RESTORE: "CAP_CHECKPOINT_RESTORE",
}

// Privilege is what the running stasis may do: its effective uid and
// capabilities. Root with CAP_SYS_ADMIN may do everything; a user with
// CAP_CHECKPOINT_RESTORE may dump and restore its own processes (criu's
// --unprivileged): map_files, clone3 with set_tid and PR_SET_MM_MAP's
// exe_fd need it. CAP_SYS_PTRACE is needed only over tasks of other
// users or with capabilities stasis lacks, and a task of another user
// also needs CAP_DAC_READ_SEARCH (its /proc/PID/map_files is 0500).
type Privilege struct {
	Uid int
	Eff uint64 // CapEff
}

// CurrentPrivilege reads this process's effective capabilities from
// /proc/self/status (capget would need its own wrapper; the status line
// is the same set).
func CurrentPrivilege() (Privilege, error) {
	p := Privilege{Uid: os.Geteuid()}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return p, fmt.Errorf("read capabilities: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			p.Eff, err = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return p, fmt.Errorf("read capabilities: CapEff %q: %w", v, err)
			}
			return p, nil
		}
	}
	return p, fmt.Errorf("read capabilities: no CapEff line in /proc/self/status")
}

// Has reports whether capability c is effective.
func (p Privilege) Has(c int) bool { return p.Eff&(1<<uint(c)) != 0 }

// Full reports whether stasis runs with CAP_SYS_ADMIN, as root does:
// nothing is degraded.
func (p Privilege) Full() bool { return p.Has(unix.CAP_SYS_ADMIN) }

// caps names the capabilities that matter here, as held.
func (p Privilege) caps() string {
	var have []string
	for _, c := range []int{unix.CAP_SYS_ADMIN, unix.CAP_CHECKPOINT_RESTORE, unix.CAP_SYS_PTRACE} {
		if p.Has(c) {
			have = append(have, capNames[c])
		}
	}
	if len(have) == 0 {
		return "none of CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE, CAP_SYS_PTRACE"
	}
	return strings.Join(have, ", ")
}

const grantHint = "run as root, or give stasis CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE (setcap cap_checkpoint_restore,cap_sys_ptrace+eip stasis) and pass --unprivileged"

// Check is the check made before a dump or restore (op) starts, as criu's
// check_caps: without CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE and the
// --unprivileged flag are required.
func (p Privilege) Check(op string, unprivileged bool) error {
	if p.Full() {
		return nil
	}
	if !p.Has(unix.CAP_CHECKPOINT_RESTORE) {
		return fmt.Errorf("%s needs root, or CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE with --unprivileged: stasis runs as uid %d with %s; %s: %w",
			op, p.Uid, p.caps(), grantHint, ErrPrivilege)
	}
	if !unprivileged {
		return fmt.Errorf("%s without CAP_SYS_ADMIN (uid %d with %s) needs --unprivileged, which accepts its limits: no task under seccomp, no TCP connection, no network lock, only the user's own processes and files: %w",
			op, p.Uid, p.caps(), ErrPrivilege)
	}
	return nil
}

// Explain wraps the error of a dump or restore (op) of the tree of pid
// (0 if not known) that failed for lack of privilege (EPERM or EACCES)
// with what is missing. Errors of a stasis with CAP_SYS_ADMIN, and any
// other error, are returned as they are: there, EPERM means something
// else.
func (p Privilege) Explain(op string, pid int, err error) error {
	if err == nil || p.Full() || !(errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) {
		return err
	}
	need := []int{unix.CAP_CHECKPOINT_RESTORE}
	what := ""
	if op == "dump" {
		need = append(need, unix.CAP_SYS_PTRACE)
		what = fmt.Sprintf(" over pid %d", pid)
		if uid, ok := ownerOf(pid); ok && uid != p.Uid {
			// /proc/PID/map_files is 0500 and owned by the task's uid:
			// CAP_CHECKPOINT_RESTORE alone does not open it (measured).
			need = append(need, unix.CAP_DAC_READ_SEARCH)
			what += fmt.Sprintf(", owned by uid %d", uid)
		}
	}
	var names, missing, setcap []string
	for _, c := range need {
		names = append(names, capNames[c])
		if !p.Has(c) {
			missing = append(missing, capNames[c])
			setcap = append(setcap, strings.ToLower(capNames[c]))
		}
	}
	fix := fmt.Sprintf("run as root, or %s only what uid %d owns and may reach", op, p.Uid)
	if len(missing) > 0 {
		fix = fmt.Sprintf("run as root, or give stasis %s (setcap %s+eip stasis) and pass --unprivileged",
			joinAnd(missing), strings.Join(setcap, ","))
	}
	return fmt.Errorf("%s needs root, or %s%s (%w: %w); stasis runs as uid %d with %s, without CAP_SYS_ADMIN; %s",
		op, joinAnd(names), what, ErrPrivilege, err, p.Uid, p.caps(), fix)
}

// joinAnd joins names as a sentence does: "A", "A and B", "A, B and C".
func joinAnd(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// ownerOf is the real uid of pid, if it exists.
func ownerOf(pid int) (int, bool) {
	if pid <= 0 {
		return 0, false
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(pid), &st); err != nil {
		return 0, false
	}
	return int(st.Uid), true
}
