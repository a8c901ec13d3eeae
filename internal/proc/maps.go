package proc

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// VMA is one line of /proc/PID/maps, plus the smaps fields stasis uses.
type VMA struct {
	Start, End, Offset        uint64
	Read, Write, Exec, Shared bool
	Major, Minor              uint32
	Inode                     uint64
	// Path is the name exactly as the kernel printed it: a file path
	// (spaces kept), "[heap]", "[stack]", "[vdso]", "[vvar]",
	// "[vvar_vclock]", "[vsyscall]", "[anon:NAME]", "/memfd:NAME",
	// "/dev/zero" for shared anonymous memory, or "" for private anonymous
	// memory. A trailing " (deleted)" is removed and sets Deleted; a live
	// file whose name really ends in " (deleted)" looks the same here, so
	// check map_files or stat the path where it matters.
	Path    string
	Deleted bool
	VmFlags []string // smaps only: the two-letter flags ("rd", "gd", "uw", ...)
	Rss     uint64   // smaps only: resident bytes
}

// Len is the size of the VMA in bytes.
func (v VMA) Len() uint64 { return v.End - v.Start }

// HasFlag reports whether smaps listed f (e.g. "gd" for a grows-down stack)
// in VmFlags. It is always false for VMAs from ParseMaps.
func (v VMA) HasFlag(f string) bool { return slices.Contains(v.VmFlags, f) }

// ParseMaps parses /proc/PID/maps.
func ParseMaps(r io.Reader) ([]VMA, error) {
	var vmas []VMA
	err := eachLine(r, "maps", func(n int, line string) error {
		v, err := parseMapsLine(line)
		if err != nil {
			return syntaxErr("maps", n, "%s in %q", err, line)
		}
		vmas = append(vmas, v)
		return nil
	})
	return vmas, err
}

// ParseSmaps parses /proc/PID/smaps: the maps header line of each VMA, then
// its "Key: value" lines, of which Rss and VmFlags are kept.
func ParseSmaps(r io.Reader) ([]VMA, error) {
	var vmas []VMA
	err := eachLine(r, "smaps", func(n int, line string) error {
		key, val, isField := smapsField(line)
		if !isField {
			v, err := parseMapsLine(line)
			if err != nil {
				return syntaxErr("smaps", n, "%s in %q", err, line)
			}
			vmas = append(vmas, v)
			return nil
		}
		if len(vmas) == 0 {
			return syntaxErr("smaps", n, "field %q before the first mapping", key)
		}
		cur := &vmas[len(vmas)-1]
		switch key {
		case "Rss":
			kb, ok := strings.CutSuffix(val, " kB")
			if !ok {
				return syntaxErr("smaps", n, "Rss %q not in kB", val)
			}
			x, err := strconv.ParseUint(strings.TrimSpace(kb), 10, 64)
			if err != nil || x > math.MaxUint64/1024 {
				return syntaxErr("smaps", n, "bad Rss %q", val)
			}
			cur.Rss = x * 1024
		case "VmFlags":
			cur.VmFlags = strings.Fields(val)
		}
		return nil
	})
	return vmas, err
}

// smapsField splits a "Key:   value" line. A maps header never qualifies: its
// first word is "start-end", which never ends in ':'.
func smapsField(line string) (key, val string, ok bool) {
	first, rest, _ := strings.Cut(line, " ")
	if !strings.HasSuffix(first, ":") {
		return "", "", false
	}
	return strings.TrimSuffix(first, ":"), strings.TrimSpace(rest), true
}

// mapsNameColumn is where the kernel pads the header to before the name:
// show_vma_header_prefix sets seq_setwidth(25 + 6*sizeof(void *) - 1) and
// show_map_vma calls seq_pad(m, ' '), which pads with spaces to that width
// and then writes one more space (fs/proc/task_mmu.c).
const mapsNameColumn = 25 + 6*8 - 1

// parseMapsLine parses
// "start-end perms offset maj:min inode<pad>name".
func parseMapsLine(line string) (VMA, error) {
	var v VMA
	pos := 0
	next := func() (string, bool) {
		for pos < len(line) && line[pos] == ' ' {
			pos++
		}
		start := pos
		for pos < len(line) && line[pos] != ' ' {
			pos++
		}
		return line[start:pos], pos > start
	}
	rng, ok := next()
	if !ok {
		return v, errf("empty line")
	}
	lo, hi, ok := strings.Cut(rng, "-")
	if !ok {
		return v, errf("bad address range %q", rng)
	}
	var err error
	if v.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return v, errf("bad start address %q", lo)
	}
	if v.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return v, errf("bad end address %q", hi)
	}
	if v.End <= v.Start {
		return v, errf("empty or reversed range %q", rng)
	}

	perms, _ := next()
	if len(perms) != 4 {
		return v, errf("bad permissions %q", perms)
	}
	flags := [4]*bool{&v.Read, &v.Write, &v.Exec, &v.Shared}
	for i, set := range [4]byte{'r', 'w', 'x', 's'} {
		unset := byte('-')
		if i == 3 {
			unset = 'p'
		}
		switch perms[i] {
		case set:
			*flags[i] = true
		case unset:
		default:
			return v, errf("bad permissions %q", perms)
		}
	}

	off, _ := next()
	if v.Offset, err = strconv.ParseUint(off, 16, 64); err != nil {
		return v, errf("bad offset %q", off)
	}
	dev, _ := next()
	maj, min, ok := strings.Cut(dev, ":")
	if !ok {
		return v, errf("bad device %q", dev)
	}
	m1, err1 := strconv.ParseUint(maj, 16, 32)
	m2, err2 := strconv.ParseUint(min, 16, 32)
	if err1 != nil || err2 != nil {
		return v, errf("bad device %q", dev)
	}
	v.Major, v.Minor = uint32(m1), uint32(m2)
	ino, _ := next()
	if v.Inode, err = strconv.ParseUint(ino, 10, 64); err != nil {
		return v, errf("bad inode %q", ino)
	}

	// The header ends with one space after the inode; a name, if any,
	// starts after the padding. Taking the exact column keeps a name that
	// itself starts with spaces; if the padding is not what the kernel
	// writes (hand-made input), fall back to skipping all spaces.
	hdr := pos + 1
	if hdr >= len(line) {
		return v, nil
	}
	name := strings.TrimLeft(line[hdr:], " ")
	if col := max(hdr, mapsNameColumn) + 1; col <= len(line) && strings.Trim(line[hdr:col], " ") == "" {
		name = line[col:]
	}
	v.Path, v.Deleted = strings.CutSuffix(name, " (deleted)")
	return v, nil
}

func errf(format string, args ...any) error { return fmt.Errorf(format, args...) }
