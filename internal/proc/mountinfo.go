package proc

import (
	"io"
	"strconv"
	"strings"
)

// Mount is one line of /proc/PID/mountinfo (proc(5)).
type Mount struct {
	ID, ParentID int
	Major, Minor uint32
	Root         string   // unescaped
	MountPoint   string   // unescaped
	Options      string   // per-mount options, raw ("rw,nosuid,relatime")
	Optional     []string // "shared:N", "master:N", "propagate_from:N", "unbindable"
	FSType       string   // "ext4", "fuse.sshfs", ...
	Source       string   // unescaped; may be empty
	SuperOptions string   // per-superblock options, raw
}

// ParseMountinfo parses /proc/PID/mountinfo.
func ParseMountinfo(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	err := eachLine(r, "mountinfo", func(n int, line string) error {
		m, err := parseMountinfoLine(line)
		if err != nil {
			return syntaxErr("mountinfo", n, "%s in %q", err, line)
		}
		mounts = append(mounts, m)
		return nil
	})
	return mounts, err
}

func parseMountinfoLine(line string) (Mount, error) {
	var m Mount
	// Split on single spaces, not strings.Fields: the kernel escapes blanks
	// inside fields, but an empty source (mount -t tmpfs "" /x) leaves two
	// spaces in a row that Fields would merge.
	f := strings.Split(line, " ")
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 10 || sep < 0 {
		return m, errf("too few fields or no \" - \" separator")
	}
	if len(f) != sep+4 {
		return m, errf("%d fields after the separator, want 3", len(f)-sep-1)
	}
	var err error
	if m.ID, err = atoi(f[0]); err != nil {
		return m, errf("bad mount id %q", f[0])
	}
	if m.ParentID, err = atoi(f[1]); err != nil {
		return m, errf("bad parent id %q", f[1])
	}
	maj, min, ok := strings.Cut(f[2], ":")
	m1, err1 := strconv.ParseUint(maj, 10, 32)
	m2, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return m, errf("bad device %q", f[2])
	}
	m.Major, m.Minor = uint32(m1), uint32(m2)
	m.Root = unescapeOctal(f[3])
	m.MountPoint = unescapeOctal(f[4])
	m.Options = f[5]
	if sep > 6 {
		m.Optional = append([]string(nil), f[6:sep]...)
	}
	m.FSType = f[sep+1]
	m.Source = unescapeOctal(f[sep+2])
	m.SuperOptions = f[sep+3]
	return m, nil
}
