package kerndat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/proc"
)

// probeMapFiles: /proc/PID/map_files exists only with CONFIG_CHECKPOINT_RESTORE.
func probeMapFiles() []Feature {
	ents, err := os.ReadDir("/proc/self/map_files")
	if err != nil {
		return withInfo(missing(CheckpointRestore, "/proc/self/map_files: %v", errors.Unwrap(err)))
	}
	detail := fmt.Sprintf("/proc/self/map_files has %d entries", len(ents))
	if len(ents) > 0 {
		if _, err := os.Readlink("/proc/self/map_files/" + ents[0].Name()); err != nil {
			detail += fmt.Sprintf(", readlink: %v", errors.Unwrap(err))
		} else {
			detail += ", readlink works"
		}
	}
	return withInfo(ok(CheckpointRestore, detail))
}

func probeCaps() []Feature {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return withInfo(missing(CapCheckpointRestore, "capget: %v", err), missing(CapSysResource, "capget: %v", err))
	}
	eff := uint64(data[1].Effective)<<32 | uint64(data[0].Effective)
	has := func(c int) bool { return eff&(1<<c) != 0 }
	desc := fmt.Sprintf("CapEff %#x", eff)
	var cr Feature
	switch {
	case has(unix.CAP_CHECKPOINT_RESTORE) && has(unix.CAP_SYS_ADMIN):
		cr = ok(CapCheckpointRestore, "held, and CAP_SYS_ADMIN")
	case has(unix.CAP_CHECKPOINT_RESTORE):
		cr = ok(CapCheckpointRestore, "held")
	case has(unix.CAP_SYS_ADMIN):
		cr = ok(CapCheckpointRestore, "not held, but CAP_SYS_ADMIN is")
	default:
		cr = missing(CapCheckpointRestore, "neither it nor CAP_SYS_ADMIN is effective (%s)", desc)
	}
	var sr Feature
	if has(unix.CAP_SYS_RESOURCE) {
		sr = ok(CapSysResource, "held")
	} else {
		max := "?"
		if b, err := os.ReadFile("/proc/sys/fs/pipe-max-size"); err == nil {
			max = strings.TrimSpace(string(b))
		}
		sr = missing(CapSysResource, "not effective (%s); pipe-max-size %s", desc, max)
	}
	return withInfo(cr, sr)
}

func probePidMax() []Feature {
	n, err := readPidMax()
	if err != nil {
		return withInfo(missing(PidMax, "%v", err))
	}
	return withInfo(ok(PidMax, strconv.Itoa(n)))
}

func readPidMax() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("/proc/sys/kernel/pid_max: bad value %q", b)
	}
	return n, nil
}

// probePidfd copies one end of a pipe through pidfd_getfd on our own pidfd
// and checks that the copy is the same file.
func probePidfd() []Feature {
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return withInfo(missing(PidfdGetfd, "pidfd_open: %v", err))
	}
	defer unix.Close(pidfd)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return withInfo(missing(PidfdGetfd, "pipe2: %v", err))
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	nfd, err := unix.PidfdGetfd(pidfd, p[0], 0)
	if err != nil {
		return withInfo(missing(PidfdGetfd, "pidfd_open works, pidfd_getfd: %v", err))
	}
	defer unix.Close(nfd)
	var a, b unix.Stat_t
	if err := unix.Fstat(p[0], &a); err != nil {
		return withInfo(missing(PidfdGetfd, "fstat: %v", err))
	}
	if err := unix.Fstat(nfd, &b); err != nil {
		return withInfo(missing(PidfdGetfd, "fstat: %v", err))
	}
	if a.Ino != b.Ino || a.Dev != b.Dev {
		return withInfo(missing(PidfdGetfd, "pidfd_getfd(%d) gave fd %d of another file", p[0], nfd))
	}
	return withInfo(ok(PidfdGetfd, fmt.Sprintf("fd %d copied as fd %d", p[0], nfd)))
}

// probeKcmp compares a pipe end with its dup (same file description: 0) and
// with the other end (different: -1 or 1, an ordering), through the
// engine's own kcmp.
func probeKcmp() []Feature {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return withInfo(missing(Kcmp, "pipe2: %v", err))
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	d, err := unix.FcntlInt(uintptr(p[0]), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return withInfo(missing(Kcmp, "dup: %v", err))
	}
	defer unix.Close(d)
	pid := os.Getpid()
	kcmp := func(a, b int) (int, error) { return linux.KcmpOrder(pid, pid, linux.KcmpFile, a, b) }
	same, err := kcmp(p[0], d)
	if err != nil {
		return withInfo(missing(Kcmp, "kcmp(KCMP_FILE): %v", err))
	}
	diff, err := kcmp(p[0], p[1])
	if err != nil {
		return withInfo(missing(Kcmp, "kcmp(KCMP_FILE): %v", err))
	}
	if same != 0 || diff == 0 {
		return withInfo(missing(Kcmp, "kcmp(KCMP_FILE) gave %d for a dup and %d for another file", same, diff))
	}
	return withInfo(ok(Kcmp, fmt.Sprintf("KCMP_FILE: dup 0, other pipe end %d", diff)))
}

// probeMntID reads our own fdinfo through internal/proc.
func probeMntID() []Feature {
	f, err := os.Open("/proc/self/stat")
	if err != nil {
		return withInfo(missing(FdinfoMntID, "%v", err))
	}
	defer f.Close()
	p := fmt.Sprintf("/proc/self/fdinfo/%d", f.Fd())
	b, err := os.ReadFile(p)
	if err != nil {
		return withInfo(missing(FdinfoMntID, "%v", err))
	}
	fi, err := proc.ParseFdinfo(bytes.NewReader(b))
	if err != nil {
		return withInfo(missing(FdinfoMntID, "%s: %v", p, err))
	}
	if !bytes.Contains(b, []byte("\nmnt_id:")) {
		return withInfo(missing(FdinfoMntID, "no mnt_id line in %s", p))
	}
	return withInfo(ok(FdinfoMntID, fmt.Sprintf("mnt_id %d for /proc/self/stat", fi.MntID)))
}

// probeMembarrier: MEMBARRIER_CMD_GET_REGISTRATIONS tells the
// registrations of a process, which the dump saves.
func probeMembarrier() []Feature {
	r, _, errno := unix.Syscall(unix.SYS_MEMBARRIER, linux.MembarrierCmdGetRegistrations, 0, 0)
	if errno != 0 {
		return withInfo(missing(MembarrierQuery, "MEMBARRIER_CMD_GET_REGISTRATIONS: %v", errno))
	}
	return withInfo(ok(MembarrierQuery, fmt.Sprintf("MEMBARRIER_CMD_GET_REGISTRATIONS: this process has %#x", r)))
}
