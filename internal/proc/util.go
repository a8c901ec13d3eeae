package proc

import (
	"strconv"
	"strings"
)

// unescapeOctal decodes the \ooo escapes that seq_file's mangle/seq_escape
// write for space, tab, newline and backslash. Anything that is not a
// complete escape is kept as is.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			n, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
			if err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// unescapeC decodes the escapes of string_escape_mem (ESCAPE_SPACE,
// ESCAPE_SPECIAL, ESCAPE_OCTAL) as used for the Name line of
// /proc/PID/status.
func unescapeC(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		c := s[i+1]
		if r, ok := cEscapes[c]; ok {
			b.WriteByte(r)
			i++
			continue
		}
		if i+3 < len(s) && isOctal(c) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

var cEscapes = map[byte]byte{
	'n': '\n', 't': '\t', 'r': '\r', 'f': '\f', 'v': '\v',
	'a': '\a', 'e': 0x1b, '\\': '\\', '"': '"',
}
