package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DevptsFile, if set (package tty sets it from its init), makes pts
// index of the devpts instance mounted at dir exist and stay until the
// restore is over. A pty slave exists only while its master is open, and
// a container's /dev/console is bound from its terminal's slave
// (/dev/pts/0 of its own devpts) before any file is restored, as criu
// makes the pty when it mounts the devpts.
var DevptsFile func(dir string, index int) error

// devptsSource makes the pty slave m is bound from, if m is a bind of a
// file of a devpts mount that is not there yet.
func (b *builder) devptsSource(m *rmount) error {
	if m.source != "" || fsName(m.e) != "devpts" || DevptsFile == nil {
		return nil
	}
	s := b.im.bindSource(m, b.im.mounts)
	if s == nil || s == m || s.fd == nil || s.e.GetRoot() == m.e.GetRoot() {
		return nil
	}
	src := below(s, m)
	if _, err := os.Lstat(src); !errors.Is(err, os.ErrNotExist) {
		return nil
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(m.e.GetRoot(), s.e.GetRoot()), "/")
	index, err := strconv.Atoi(rel)
	if err != nil || strings.Contains(rel, "/") {
		return nil // not a pts slave: the bind says what is missing
	}
	if err := DevptsFile(filepath.Clean(s.target), index); err != nil {
		return fmt.Errorf("make /dev/pts/%d to bind it at %s: %w", index, m.e.GetMountpoint(), err)
	}
	return nil
}
