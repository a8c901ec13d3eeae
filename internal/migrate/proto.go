package migrate

import (
	"encoding/binary"
	"fmt"
	"io"
	"path"
	"strings"
)

// Frame types. Each frame: u8 type, u16 name length, the name, u64
// payload length, the payload.
const (
	frameDir     = 1 // name: a dir under the target's root
	frameFile    = 2 // name: dir/file; payload: its bytes
	frameSymlink = 3 // name: dir/link; payload: the link's target
	frameSync    = 4 // answered with a status: everything so far stored
	frameRestore = 5 // name: the dir to restore; payload: restore flags, NUL-separated
	frameEnd     = 6 // the source is done (after a failure: remove what came)
	frameLock    = 7 // name: a dir whose connections the target locks now
	framePrepare = 8 // name: the dir to restore next; payload: restore flags (no answer)

	maxName = 4096
	maxLink = 4096
	maxArgs = 1 << 16
)

// Labels of the two directions of a sealed stream.
const (
	LabelToTarget = "stasis migration stream to the target"
	LabelToSource = "stasis migration stream to the source"
)

func writeFrame(w io.Writer, typ byte, name string, payload int64) error {
	b := make([]byte, 0, 11+len(name))
	b = append(b, typ)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(name)))
	b = append(b, name...)
	b = binary.LittleEndian.AppendUint64(b, uint64(payload))
	_, err := w.Write(b)
	return err
}

func readFrame(r io.Reader) (typ byte, name string, payload int64, err error) {
	var h [3]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return
	}
	typ = h[0]
	n := binary.LittleEndian.Uint16(h[1:])
	if n > maxName {
		return 0, "", 0, fmt.Errorf("%w: name of %d bytes", ErrProtocol, n)
	}
	b := make([]byte, int(n)+8)
	if _, err = io.ReadFull(r, b); err != nil {
		return
	}
	name = string(b[:n])
	p := binary.LittleEndian.Uint64(b[n:])
	if p > 1<<50 {
		return 0, "", 0, fmt.Errorf("%w: payload of %d bytes", ErrProtocol, p)
	}
	return typ, name, int64(p), nil
}

// answer is the target's reply to a sync or a restore: a status, a pid
// (of the restored root), the restore's time in µs, and an error text.
type answer struct {
	ok      bool
	pid     int
	restore int64
	msg     string
}

func writeAnswer(w io.Writer, a answer) error {
	b := make([]byte, 0, 21+len(a.msg))
	if a.ok {
		b = append(b, 0)
	} else {
		b = append(b, 1)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(a.pid))
	b = binary.LittleEndian.AppendUint64(b, uint64(a.restore))
	if len(a.msg) > maxArgs {
		a.msg = a.msg[:maxArgs]
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(a.msg)))
	b = append(b, a.msg...)
	_, err := w.Write(b)
	return err
}

func readAnswer(r io.Reader) (answer, error) {
	var h [17]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return answer{}, fmt.Errorf("no answer from the target: %w", err)
	}
	a := answer{ok: h[0] == 0, pid: int(binary.LittleEndian.Uint32(h[1:])), restore: int64(binary.LittleEndian.Uint64(h[5:]))}
	n := binary.LittleEndian.Uint32(h[13:])
	if n > maxArgs {
		return a, fmt.Errorf("%w: answer of %d bytes", ErrProtocol, n)
	}
	m := make([]byte, n)
	if _, err := io.ReadFull(r, m); err != nil {
		return a, fmt.Errorf("no answer from the target: %w", err)
	}
	a.msg = string(m)
	return a, nil
}

// cleanName checks that name is a relative path of at most two parts
// (dir or dir/file), with no "..": the target writes only under its root.
func cleanName(name string, parts int) error {
	if name == "" || strings.HasPrefix(name, "/") || path.Clean(name) != name || strings.Count(name, "/") >= parts {
		return fmt.Errorf("%w: bad name %q", ErrProtocol, name)
	}
	for _, p := range strings.Split(name, "/") {
		if p == ".." || p == "." {
			return fmt.Errorf("%w: bad name %q", ErrProtocol, name)
		}
	}
	return nil
}
