package ns

import (
	"fmt"
)

// Files of namespaces (an fd on /proc/PID/ns/KIND, internal/files'
// nsfile.go) name their namespace by the id the tasks' ids images give
// it; here the ids are handed out at the dump and found again at the
// restore.

// FileID returns the id and CLONE_NEW* flag of the namespace of kind name
// ("net") and inode ino that a file of the tree refers to. Only stasis'
// own namespaces and those of the tree's tasks have one: any other would
// not be there at restore.
func (d *Dumper) FileID(name string, ino uint64) (uint32, uint32, error) {
	k := kindIndex(name)
	if k < 0 {
		return 0, 0, fmt.Errorf("a namespace file of kind %q: %w", name, ErrNotSupported)
	}
	known := ino == d.self[k]
	for _, in := range d.tasks {
		known = known || in[k] == ino
	}
	if !known {
		return 0, 0, fmt.Errorf("a file of %s namespace %d, which no task of the tree is in: namespaces outside the tree are %w",
			kinds[k].title, ino, ErrNotSupported)
	}
	return d.ids.id(k, ino), uint32(kinds[k].flag), nil
}

func kindIndex(name string) int {
	for i, k := range kinds {
		if k.name == name {
			return i
		}
	}
	return -1
}

// FilePath returns the path that opens the namespace of id and CLONE_NEW*
// flag cflag of the images: that of a restored task in it (host gives
// the host pid of a task of the images once it is created), or the
// restoring stasis' own for the dumping tool's own that no task is in.
func (r *Restorer) FilePath(id, cflag uint32, host func(pid int) (int, bool)) (string, error) {
	k := -1
	for i, kd := range kinds {
		if uint64(cflag) == kd.flag {
			k = i
		}
	}
	if k < 0 {
		return "", fmt.Errorf("namespace %d of clone flag %#x: %w", id, cflag, ErrBadImage)
	}
	name := kinds[k].name
	for pid, ids := range r.taskIDs {
		if ids == nil || nsID(ids, k) != id {
			continue
		}
		if h, ok := host(pid); ok {
			return fmt.Sprintf("/proc/%d/ns/%s", h, name), nil
		}
	}
	if r.own != nil && nsID(r.own, k) == id {
		return "/proc/thread-self/ns/" + name, nil
	}
	return "", fmt.Errorf("%s namespace %d: no restored task is in it: %w", kinds[k].title, id, ErrBadImage)
}
