package criuconf

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Option is one line of a configuration file: the long option's name
// (without "--") and its argument, if the line has one.
type Option struct {
	Name   string
	Arg    string
	HasArg bool
	File   string
	Line   int
}

// maxFile bounds a configuration file: criu's are a few lines.
const maxFile = 1 << 20

// Parse reads the options of one configuration file; file names it in
// errors.
func Parse(r io.Reader, file string) ([]Option, error) {
	var out []Option
	sc := bufio.NewScanner(io.LimitReader(r, maxFile))
	sc.Buffer(make([]byte, 64<<10), maxFile)
	n := 0
	for sc.Scan() {
		n++
		words, err := split(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, n, err)
		}
		if len(words) == 0 {
			continue
		}
		if len(words) > 2 {
			return nil, fmt.Errorf("%s:%d: %q takes one argument, the line has %d (quote an argument with blanks): %w", file, n, words[0], len(words)-1, ErrSyntax)
		}
		name := strings.TrimPrefix(words[0], "--")
		o := Option{Name: name, File: file, Line: n}
		if len(words) == 2 {
			o.Arg, o.HasArg = words[1], true
		}
		out = append(out, o)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return out, nil
}

// split cuts a line into words as criu does: blanks separate, '#'
// outside quotes ends the line, double quotes group, \" inside them is
// a quote; any other backslash is itself.
func split(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line) && line[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			quoted = !quoted
			in = true
		case quoted:
			cur.WriteByte(c)
		case c == '#':
			i = len(line)
		case c == ' ' || c == '\t' || c == '\r':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated double quote: %w", ErrSyntax)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// ReadFile parses path. A file that does not exist, or that this user
// cannot reach (a $HOME left from another user: root's, for a tool run
// as nobody), gives no options and no error when optional is set (criu
// skips absent default files).
func ReadFile(path string, optional bool) ([]Option, error) {
	f, err := os.Open(path)
	if err != nil {
		if optional && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)) {
			return nil, nil
		}
		return nil, fmt.Errorf("configuration file: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// DefaultFiles are the files criu reads before its options unless
// --no-default-config: /etc/criu/default.conf, $HOME/.criu/default.conf;
// then $CRIU_CONFIG_FILE, read even with --no-default-config as criu does.
func DefaultFiles(noDefault bool) []string {
	var files []string
	if !noDefault {
		files = append(files, "/etc/criu/default.conf")
		if home := os.Getenv("HOME"); home != "" {
			files = append(files, filepath.Join(home, ".criu", "default.conf"))
		}
	}
	if env := os.Getenv("CRIU_CONFIG_FILE"); env != "" {
		files = append(files, env)
	}
	return files
}

// Load reads the default files, then explicit (--config) if set: the
// options in criu's order of evaluation, a later one overriding.
func Load(explicit string, noDefault bool) ([]Option, error) {
	var all []Option
	for _, f := range DefaultFiles(noDefault) {
		opts, err := ReadFile(f, true)
		if err != nil {
			return nil, err
		}
		all = append(all, opts...)
	}
	if explicit != "" {
		opts, err := ReadFile(explicit, false)
		if err != nil {
			return nil, err
		}
		all = append(all, opts...)
	}
	return all, nil
}
