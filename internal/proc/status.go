package proc

import (
	"io"
	"strconv"
	"strings"
)

// Status holds the fields of /proc/PID/status that checkpointing uses.
type Status struct {
	Name      string // unescaped (status escapes '\n' and '\\' in the name)
	Umask     uint32
	State     byte
	Tgid      int
	Pid       int
	PPid      int
	TracerPid int
	Uid, Gid  [4]uint32 // real, effective, saved, fs
	Groups    []uint32  // nil when there are none

	// Ids in each pid namespace, as the kernel lists them: first in the
	// namespace of the /proc mount that was read, last in the task's own
	// (innermost) namespace.
	NSpid, NStgid, NSpgid, NSsid []int

	Threads                                int
	SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt uint64
	CapInh, CapPrm, CapEff, CapBnd, CapAmb uint64
	NoNewPrivs                             int
	Seccomp                                int // SECCOMP_MODE_*
	SeccompFilters                         int

	// Kthread is set from the "Kthread:" line (Linux 6.x). Older kernels
	// lack it; use Stat.Flags&PF_KTHREAD (0x00200000) there.
	Kthread bool
}

// ParseStatus parses /proc/PID/status. Unknown lines are ignored; a known
// line with a malformed value is an error, and so is a file without Name or
// Pid.
func ParseStatus(r io.Reader) (*Status, error) {
	st := &Status{}
	var seenName, seenPid bool
	err := eachLine(r, "status", func(n int, line string) error {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return nil
		}
		val = strings.TrimLeft(val, " \t")
		var err error
		switch key {
		case "Name":
			st.Name, seenName = unescapeC(val), true
		case "Umask":
			var u uint64
			u, err = strconv.ParseUint(val, 8, 32)
			st.Umask = uint32(u)
		case "State":
			if val == "" {
				return syntaxErr("status", n, "empty State")
			}
			st.State = val[0]
		case "Tgid":
			st.Tgid, err = atoi(val)
		case "Pid":
			st.Pid, err = atoi(val)
			seenPid = true
		case "PPid":
			st.PPid, err = atoi(val)
		case "TracerPid":
			st.TracerPid, err = atoi(val)
		case "Uid":
			st.Uid, err = ids4(val)
		case "Gid":
			st.Gid, err = ids4(val)
		case "Groups":
			for _, g := range strings.Fields(val) {
				var x uint64
				if x, err = strconv.ParseUint(g, 10, 32); err != nil {
					break
				}
				st.Groups = append(st.Groups, uint32(x))
			}
		case "NSpid":
			st.NSpid, err = intList(val)
		case "NStgid":
			st.NStgid, err = intList(val)
		case "NSpgid":
			st.NSpgid, err = intList(val)
		case "NSsid":
			st.NSsid, err = intList(val)
		case "Threads":
			st.Threads, err = atoi(val)
		case "SigPnd":
			st.SigPnd, err = hex64(val)
		case "ShdPnd":
			st.ShdPnd, err = hex64(val)
		case "SigBlk":
			st.SigBlk, err = hex64(val)
		case "SigIgn":
			st.SigIgn, err = hex64(val)
		case "SigCgt":
			st.SigCgt, err = hex64(val)
		case "CapInh":
			st.CapInh, err = hex64(val)
		case "CapPrm":
			st.CapPrm, err = hex64(val)
		case "CapEff":
			st.CapEff, err = hex64(val)
		case "CapBnd":
			st.CapBnd, err = hex64(val)
		case "CapAmb":
			st.CapAmb, err = hex64(val)
		case "NoNewPrivs":
			st.NoNewPrivs, err = atoi(val)
		case "Seccomp":
			st.Seccomp, err = atoi(val)
		case "Seccomp_filters":
			st.SeccompFilters, err = atoi(val)
		case "Kthread":
			var k int
			k, err = atoi(val)
			st.Kthread = k != 0
		}
		if err != nil {
			return syntaxErr("status", n, "bad %s value %q", key, val)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !seenName || !seenPid {
		return nil, syntaxErr("status", 0, "no Name or Pid line")
	}
	return st, nil
}

func atoi(s string) (int, error) {
	v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 32)
	return int(v), err
}

func hex64(s string) (uint64, error) { return strconv.ParseUint(strings.TrimSpace(s), 16, 64) }

func ids4(s string) ([4]uint32, error) {
	var out [4]uint32
	f := strings.Fields(s)
	if len(f) != 4 {
		return out, errf("%d ids, want 4", len(f))
	}
	for i, x := range f {
		v, err := strconv.ParseUint(x, 10, 32)
		if err != nil {
			return out, err
		}
		out[i] = uint32(v)
	}
	return out, nil
}

func intList(s string) ([]int, error) {
	f := strings.Fields(s)
	out := make([]int, 0, len(f))
	for _, x := range f {
		v, err := atoi(x)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
