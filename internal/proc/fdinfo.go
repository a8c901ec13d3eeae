package proc

import (
	"io"
	"strconv"
	"strings"
)

// Fdinfo is /proc/PID/fdinfo/FD.
type Fdinfo struct {
	Pos   uint64
	Flags uint32 // open flags; the file prints them in octal
	MntID int
	Ino   uint64
	// Extra maps the key of every other "key: value" line to its trimmed
	// value ("eventfd-count" -> "7", "sigmask" -> "0000000000000a00",
	// "settime flags" -> "00"). A key that repeats (epoll "tfd", "inotify
	// wd", "fanotify ino", "lock") keeps its first value here; use Lines.
	Extra map[string]string
	// Lines holds every line other than pos, flags, mnt_id and ino, raw and
	// in order, for the fd kinds with one line per item.
	Lines []string
}

// ParseFdinfo parses /proc/PID/fdinfo/FD. pos and flags are required.
func ParseFdinfo(r io.Reader) (*Fdinfo, error) {
	fi := &Fdinfo{Extra: map[string]string{}}
	var seenPos, seenFlags bool
	err := eachLine(r, "fdinfo", func(n int, line string) error {
		key, val, ok := strings.Cut(line, ":")
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		var err error
		switch {
		case !ok:
			fi.Lines = append(fi.Lines, line)
			return nil
		case key == "pos":
			// loff_t, printed signed; keep the bits of a negative one.
			var p int64
			if p, err = strconv.ParseInt(val, 10, 64); err == nil {
				fi.Pos = uint64(p)
			} else {
				fi.Pos, err = strconv.ParseUint(val, 10, 64)
			}
			seenPos = true
		case key == "flags":
			var f uint64
			f, err = strconv.ParseUint(val, 8, 32)
			fi.Flags = uint32(f)
			seenFlags = true
		case key == "mnt_id":
			fi.MntID, err = atoi(val)
		case key == "ino":
			fi.Ino, err = strconv.ParseUint(val, 10, 64)
		default:
			if _, dup := fi.Extra[key]; !dup {
				fi.Extra[key] = val
			}
			fi.Lines = append(fi.Lines, line)
			return nil
		}
		if err != nil {
			return syntaxErr("fdinfo", n, "bad %s %q", key, val)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !seenPos || !seenFlags {
		return nil, syntaxErr("fdinfo", 0, "no pos or flags line")
	}
	return fi, nil
}
