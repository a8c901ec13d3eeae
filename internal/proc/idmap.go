package proc

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// IDExtent is one line of /proc/PID/uid_map or gid_map: Count ids from
// First inside the task's user namespace are ids from Lower outside.
// Read from the initial user namespace, Lower is the kernel's global id
// whatever the nesting (the kernel keeps extents in global ids).
type IDExtent struct {
	First, Lower, Count uint32
}

// IDMap is a user namespace's uid or gid map.
type IDMap []IDExtent

// overflowID is what the kernel shows for an id a namespace does not map
// (kernel.overflowuid/overflowgid, 65534 unless changed).
const overflowID = 65534

// Inside turns a global id into the namespace's (the overflow id if it
// maps none). A nil map is the identity: the initial user namespace's.
func (m IDMap) Inside(id uint32) uint32 {
	if m == nil {
		return id
	}
	for _, e := range m {
		if id >= e.Lower && uint64(id) < uint64(e.Lower)+uint64(e.Count) {
			return e.First + (id - e.Lower)
		}
	}
	return overflowID
}

// Identity tells whether m maps every id to itself (the initial user
// namespace's "0 0 4294967295").
func (m IDMap) Identity() bool {
	return len(m) == 1 && m[0].First == 0 && m[0].Lower == 0 && m[0].Count == ^uint32(0)
}

// ParseIDMap parses a uid_map or gid_map: lines of three numbers.
func ParseIDMap(r io.Reader) (IDMap, error) {
	sc := bufio.NewScanner(r)
	m := IDMap{}
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, syntaxErr("id_map", n, "%d fields, want 3", len(f))
		}
		var v [3]uint32
		for i := range f {
			x, err := strconv.ParseUint(f[i], 10, 32)
			if err != nil {
				return nil, syntaxErr("id_map", n, "field %d: %v", i+1, err)
			}
			v[i] = uint32(x)
		}
		m = append(m, IDExtent{First: v[0], Lower: v[1], Count: v[2]})
	}
	return m, sc.Err()
}

// ReadIDMap reads /proc/PID/uid_map (which "uid_map") or gid_map.
func ReadIDMap(pid int, which string) (IDMap, error) {
	return parseFile(path(pid, which), ParseIDMap)
}
