package proc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/linux"
)

func path(pid int, name string) string { return fmt.Sprintf("/proc/%d/%s", pid, name) }

// named makes an error name the file it came from. Errors from os already
// do (*fs.PathError); parse errors get the path in front.
func named(p string, err error) error {
	if err == nil {
		return nil
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("%s: %w", p, err)
}

func parseFile[T any](p string, parse func(io.Reader) (T, error)) (T, error) {
	fd, err := linux.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		var zero T
		return zero, err
	}
	defer unix.Close(fd)
	v, err := parse(rawFile{fd: fd, path: p})
	return v, named(p, err)
}

// ReadFile reads the whole file p, as os.ReadFile without offering it to
// the runtime's poller first (four system calls more per file, which a
// /proc file always refuses): a dump reads a dozen of them per process.
func ReadFile(p string) ([]byte, error) {
	return parseFile(p, func(r io.Reader) ([]byte, error) { return io.ReadAll(r) })
}

// ReadMaps reads /proc/PID/maps.
func ReadMaps(pid int) ([]VMA, error) { return parseFile(path(pid, "maps"), ParseMaps) }

// ReadSmaps reads /proc/PID/smaps.
func ReadSmaps(pid int) ([]VMA, error) { return parseFile(path(pid, "smaps"), ParseSmaps) }

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (*Stat, error) { return parseFile(path(pid, "stat"), ParseStat) }

// ReadStatus reads /proc/PID/status.
func ReadStatus(pid int) (*Status, error) { return parseFile(path(pid, "status"), ParseStatus) }

// ReadMountinfo reads /proc/PID/mountinfo.
func ReadMountinfo(pid int) ([]Mount, error) {
	return parseFile(path(pid, "mountinfo"), ParseMountinfo)
}

// ReadFdinfo reads /proc/PID/fdinfo/FD.
func ReadFdinfo(pid, fd int) (*Fdinfo, error) {
	return parseFile(path(pid, "fdinfo/"+strconv.Itoa(fd)), ParseFdinfo)
}

// ReadAuxv reads /proc/PID/auxv.
func ReadAuxv(pid int) ([]uint64, error) {
	p := path(pid, "auxv")
	b, err := ReadFile(p)
	if err != nil {
		return nil, err
	}
	v, err := ParseAuxv(b)
	return v, named(p, err)
}

// Children reads /proc/PID/task/TID/children: the children forked by that
// thread, in the kernel's order. It needs CONFIG_PROC_CHILDREN, and is only
// stable while the tree is frozen.
func Children(pid, tid int) ([]int, error) {
	p := path(pid, "task/"+strconv.Itoa(tid)+"/children")
	b, err := ReadFile(p)
	if err != nil {
		return nil, err
	}
	v, err := parseChildren(b)
	return v, named(p, err)
}

func parseChildren(b []byte) ([]int, error) {
	f := strings.Fields(string(b))
	out := make([]int, 0, len(f))
	for _, x := range f {
		v, err := strconv.Atoi(x)
		if err != nil || v <= 0 {
			return nil, syntaxErr("children", 0, "bad pid %q", x)
		}
		out = append(out, v)
	}
	return out, nil
}
