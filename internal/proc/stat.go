package proc

import (
	"bytes"
	"io"
	"strconv"
	"strings"
)

// Stat holds the fields of /proc/PID/stat that checkpointing uses. Field
// numbers in the comments are those of proc(5).
type Stat struct {
	Pid     int    // (1)
	Comm    string // (2) raw: may hold spaces, parentheses and newlines
	State   byte   // (3)
	PPid    int    // (4)
	Pgrp    int    // (5)
	Session int    // (6)
	TtyNr   int    // (7) the controlling terminal's device
	Tpgid   int    // (8) its foreground process group, -1 if none
	Flags   uint32 // (9) PF_* flags

	StartCode, EndCode, StartStack uint64 // (26) (27) (28); 0 without ptrace-read access
	StartData, EndData, StartBrk   uint64 // (45) (46) (47)
	ArgStart, ArgEnd               uint64 // (48) (49)
	EnvStart, EnvEnd               uint64 // (50) (51)
	ExitCode                       int    // (52) in waitpid(2) form

	NumThreads int    // (20)
	StartTime  uint64 // (22) clock ticks after boot
	Nice       int    // (19)
	Priority   int    // (18) negative for real-time tasks
	RtPriority uint32 // (40)
	Policy     uint32 // (41)
}

// statFields is how many fields proc(5) documents (since Linux 3.5); fewer
// means a truncated or foreign file.
const statFields = 52

// ParseStat parses /proc/PID/stat (or /proc/PID/task/TID/stat).
func ParseStat(r io.Reader) (*Stat, error) {
	b, err := readAll(r, "stat")
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	// comm is printed raw between "(" and ")", so it may itself contain
	// ") "; the last ')' in the line is the real end.
	open := bytes.IndexByte(b, '(')
	cl := bytes.LastIndexByte(b, ')')
	if open < 1 || cl < open || b[open-1] != ' ' {
		return nil, syntaxErr("stat", 0, "no (comm) in %.80q", b)
	}
	st := &Stat{Comm: string(b[open+1 : cl])}
	if st.Pid, err = strconv.Atoi(string(b[:open-1])); err != nil {
		return nil, syntaxErr("stat", 0, "bad pid %.20q", b[:open-1])
	}
	rest := string(b[cl+1:])
	if !strings.HasPrefix(rest, " ") {
		return nil, syntaxErr("stat", 0, "no space after comm")
	}
	f := strings.Fields(rest)
	if n := len(f) + 2; n < statFields {
		return nil, syntaxErr("stat", 0, "%d fields, want %d", n, statFields)
	}
	if len(f[0]) != 1 {
		return nil, syntaxErr("stat", 0, "bad state %q", f[0])
	}
	st.State = f[0][0]

	p := statParser{f: f}
	st.PPid = p.int(4)
	st.Pgrp = p.int(5)
	st.Session = p.int(6)
	st.TtyNr = p.int(7)
	st.Tpgid = p.int(8)
	st.Flags = uint32(p.uint(9, 32))
	st.Priority = p.int(18)
	st.Nice = p.int(19)
	st.NumThreads = p.int(20)
	st.StartTime = p.uint(22, 64)
	st.StartCode = p.uint(26, 64)
	st.EndCode = p.uint(27, 64)
	st.StartStack = p.uint(28, 64)
	st.RtPriority = uint32(p.uint(40, 32))
	st.Policy = uint32(p.uint(41, 32))
	st.StartData = p.uint(45, 64)
	st.EndData = p.uint(46, 64)
	st.StartBrk = p.uint(47, 64)
	st.ArgStart = p.uint(48, 64)
	st.ArgEnd = p.uint(49, 64)
	st.EnvStart = p.uint(50, 64)
	st.EnvEnd = p.uint(51, 64)
	st.ExitCode = p.int(52)
	if p.err != nil {
		return nil, p.err
	}
	return st, nil
}

// statParser converts fields by their proc(5) number and keeps the first
// error.
type statParser struct {
	f   []string // fields 3..N
	err error
}

func (p *statParser) field(n int) string { return p.f[n-3] }

func (p *statParser) int(n int) int {
	v, err := strconv.ParseInt(p.field(n), 10, 32)
	if err != nil && p.err == nil {
		p.err = syntaxErr("stat", 0, "field %d: bad number %q", n, p.field(n))
	}
	return int(v)
}

func (p *statParser) uint(n, bits int) uint64 {
	v, err := strconv.ParseUint(p.field(n), 10, bits)
	if err != nil && p.err == nil {
		p.err = syntaxErr("stat", 0, "field %d: bad number %q", n, p.field(n))
	}
	return v
}
