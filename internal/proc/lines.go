package proc

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// maxLine bounds one line of a /proc file. Real lines are below PATH_MAX plus
// a header (maps) or a few KiB of mount options; anything longer is corrupt.
const maxLine = 1 << 20

// maxFile bounds the single-shot reads (stat, auxv, children).
const maxFile = 1 << 20

// scanLF splits on '\n' only. bufio.ScanLines would also drop a '\r' before
// it, which would corrupt a file name that ends in '\r'.
func scanLF(data []byte, atEOF bool) (int, []byte, error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// eachLine calls fn for every line of r with its 1-based number.
func eachLine(r io.Reader, file string, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	sc.Split(scanLF)
	n := 0
	for sc.Scan() {
		n++
		if err := fn(n, sc.Text()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return syntaxErr(file, n+1, "line longer than %d bytes", maxLine)
		}
		return err
	}
	return nil
}

// readAll reads r whole, refusing more than maxFile bytes.
func readAll(r io.Reader, file string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFile {
		return nil, syntaxErr(file, 0, "longer than %d bytes", maxFile)
	}
	return b, nil
}
