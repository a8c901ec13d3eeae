package proc

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limit is one resource limit of /proc/PID/limits, in the kernel's order
// (RLIMIT_CPU first); RLIM_INFINITY is ^uint64(0).
type Limit struct {
	Name     string
	Cur, Max uint64
}

// ParseLimits parses /proc/PID/limits. Values are in the resource's own
// unit (the "Units" column is informational).
func ParseLimits(r io.Reader) ([]Limit, error) {
	sc := bufio.NewScanner(r)
	var out []Limit
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if line == 1 {
			continue // header
		}
		// The name column is 26 characters wide and may contain spaces;
		// then soft limit, hard limit, units.
		if len(text) < 26 {
			return nil, &SyntaxError{File: "limits", Line: line, Msg: "short line"}
		}
		f := strings.Fields(text[26:])
		if len(f) < 2 {
			return nil, &SyntaxError{File: "limits", Line: line, Msg: "missing limits"}
		}
		cur, err := parseLimit(f[0])
		if err != nil {
			return nil, &SyntaxError{File: "limits", Line: line, Msg: err.Error()}
		}
		max, err := parseLimit(f[1])
		if err != nil {
			return nil, &SyntaxError{File: "limits", Line: line, Msg: err.Error()}
		}
		out = append(out, Limit{Name: strings.TrimSpace(text[:26]), Cur: cur, Max: max})
	}
	return out, sc.Err()
}

func parseLimit(s string) (uint64, error) {
	if s == "unlimited" {
		return ^uint64(0), nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad limit %q", s)
	}
	return v, nil
}

// ReadLimits reads /proc/PID/limits.
func ReadLimits(pid int) ([]Limit, error) {
	return parseFile(path(pid, "limits"), ParseLimits)
}
