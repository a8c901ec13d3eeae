package proc

import (
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every error about the content of a /proc file
// (as opposed to failing to read it).
var ErrMalformed = errors.New("malformed /proc data")

// SyntaxError reports malformed content of a /proc file.
type SyntaxError struct {
	File string // kind of file: "maps", "smaps", "stat", "status", "fdinfo", "auxv", "mountinfo", "children"
	Line int    // 1-based line number; 0 when the file is taken as a whole
	Msg  string
}

func (e *SyntaxError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s line %d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

func (e *SyntaxError) Unwrap() error { return ErrMalformed }

func syntaxErr(file string, line int, format string, args ...any) error {
	return &SyntaxError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
}
