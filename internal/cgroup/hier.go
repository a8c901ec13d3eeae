package cgroup

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/proc"
)

// member is one line of /proc/PID/cgroup: the cgroup of a task in one
// hierarchy. name is the hierarchy's controllers as criu names them:
// "memory", "cpu,cpuacct", "name=systemd", "" for cgroup v2.
type member struct {
	name   string
	path   string
	prefix uint32 // cgns_prefix: the length of path that is the task's cgroup namespace root
}

// parseMembers parses the content of a /proc/PID/cgroup file, sorted by
// name then path as criu keeps a set. Hierarchies of controllers that
// skip says are left out (--cgroup-dump-controller).
func parseMembers(b []byte, skip func(string) bool) ([]member, error) {
	var ms []member
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			return nil, fmt.Errorf("cgroup line %q: want ID:CONTROLLERS:PATH", line)
		}
		if skip != nil && skip(f[1]) {
			continue
		}
		ms = append(ms, member{name: f[1], path: f[2]})
	}
	sort.Slice(ms, func(i, j int) bool {
		if ms[i].name != ms[j].name {
			return ms[i].name < ms[j].name
		}
		return ms[i].path < ms[j].path
	})
	return ms, nil
}

// readMembers reads the cgroups of thread tid of process pid (pid 0:
// stasis itself).
func readMembers(pid, tid int, skip func(string) bool) ([]member, error) {
	p := fmt.Sprintf("/proc/%d/task/%d/cgroup", pid, tid)
	if pid == 0 {
		p = "/proc/self/cgroup"
	}
	b, err := proc.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("cgroups of tid %d of pid %d: %w", tid, pid, err)
	}
	ms, err := parseMembers(b, skip)
	if err != nil {
		return nil, fmt.Errorf("cgroups of tid %d of pid %d: %w", tid, pid, err)
	}
	return ms, nil
}

// controllerNames splits a hierarchy name into the controllers criu lists
// in a cg_controller_entry's cnames.
func controllerNames(name string) []string {
	if name == "" {
		return []string{""}
	}
	return strings.Split(name, ",")
}

// contains tells whether hierarchy name (a member's) holds every
// controller of cnames, as criu's cgroup_contains: cgroup v2's cnames
// [""] only matches "".
func contains(cnames []string, name string) bool {
	if len(cnames) == 1 && cnames[0] == "" {
		return name == ""
	}
	if len(cnames) == 0 {
		return false
	}
	have := strings.Split(name, ",")
	for _, c := range cnames {
		found := false
		for _, h := range have {
			if h == c {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// yardName is the directory criu gives a hierarchy in a cgroup yard:
// "memory", "cpu,cpuacct", "systemd" for name=systemd, "unified" for v2.
func yardName(cnames []string) string {
	parts := make([]string, len(cnames))
	for i, c := range cnames {
		switch {
		case c == "":
			parts[i] = "unified"
		case strings.HasPrefix(c, "name="):
			parts[i] = strings.TrimPrefix(c, "name=")
		default:
			parts[i] = c
		}
	}
	return strings.Join(parts, ",")
}

// hierarchy is one cgroup hierarchy opened by stasis: a detached mount
// of its root (nothing appears in any mount table, so no other tool
// sees it come and go), or a directory of a --cgroup-yard.
type hierarchy struct {
	cnames []string
	v2     bool
	dir    *os.File // the hierarchy's root
	root   string   // /proc/self/fd/N: paths under the hierarchy
}

// openHierarchy opens the hierarchy of controllers cnames: in yard
// (criu's --cgroup-yard: a directory holding each hierarchy mounted
// under yardName) if given, else by a detached mount of its root.
func openHierarchy(cnames []string, yard string) (*hierarchy, error) {
	h := &hierarchy{cnames: cnames, v2: len(cnames) == 1 && cnames[0] == ""}
	var fd int
	if yard != "" {
		p := path.Join(yard, yardName(cnames))
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("cgroup yard %s: hierarchy %s (%s): %w (mount it there, or drop --cgroup-yard)", yard, yardName(cnames), p, ErrMissing)
		}
		h.dir = f
	} else {
		fstype := "cgroup"
		if h.v2 {
			fstype = "cgroup2"
		}
		fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("open the %s hierarchy %q: %w", fstype, strings.Join(cnames, ","), os.NewSyscallError("fsopen", err))
		}
		defer unix.Close(fsfd)
		if !h.v2 {
			for _, c := range cnames {
				if strings.HasPrefix(c, "name=") {
					err = unix.FsconfigSetString(fsfd, "name", strings.TrimPrefix(c, "name="))
				} else {
					err = unix.FsconfigSetFlag(fsfd, c)
				}
				if err != nil {
					return nil, fmt.Errorf("open the cgroup hierarchy %q: %s: %w", strings.Join(cnames, ","), c, os.NewSyscallError("fsconfig", err))
				}
			}
		}
		if err := unix.FsconfigCreate(fsfd); err != nil {
			// A controller bound to another hierarchy (v1 images on a
			// pure v2 host) cannot be mounted on its own.
			return nil, fmt.Errorf("open the %s hierarchy %q (does this host have it?): %w (--manage-cgroups=ignore leaves cgroups alone)", fstype, strings.Join(cnames, ","), os.NewSyscallError("fsconfig", err))
		}
		if fd, err = unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0); err != nil {
			return nil, fmt.Errorf("open the %s hierarchy %q: %w", fstype, strings.Join(cnames, ","), os.NewSyscallError("fsmount", err))
		}
		h.dir = os.NewFile(uintptr(fd), fstype+":"+strings.Join(cnames, ","))
	}
	h.root = fmt.Sprintf("/proc/self/fd/%d", h.dir.Fd())
	return h, nil
}

// path is the path of cgroup p (absolute in the hierarchy) through h.
func (h *hierarchy) path(p string) string {
	return h.root + path.Clean("/"+p)
}

func (h *hierarchy) close() {
	if h != nil && h.dir != nil {
		h.dir.Close()
		h.dir = nil
	}
}

// hierarchies keeps the hierarchies opened, by name.
type hierarchies struct {
	yard string
	by   map[string]*hierarchy
}

func (hs *hierarchies) get(cnames []string) (*hierarchy, error) {
	key := strings.Join(cnames, ",")
	if h := hs.by[key]; h != nil {
		return h, nil
	}
	h, err := openHierarchy(cnames, hs.yard)
	if err != nil {
		return nil, err
	}
	if hs.by == nil {
		hs.by = map[string]*hierarchy{}
	}
	hs.by[key] = h
	return h, nil
}

func (hs *hierarchies) close() {
	for _, h := range hs.by {
		h.close()
	}
	hs.by = nil
}
