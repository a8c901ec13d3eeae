package pstree

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/remote"
)

// LeadSessionOrGroup has task t, process p, start its own session or
// group, as its image says: children created after this inherit them. A
// session leader that joins its own session otherwise (joinsOwn, see
// tty.JoinsOwnSession) does not; a new one takes its controlling
// terminal (takeCtty).
func LeadSessionOrGroup(t remote.Task, p *Proc, joinsOwn bool, takeCtty func() error) error {
	pid := p.Pid()
	switch {
	case p.Sid() == pid && !joinsOwn:
		if _, err := t.Call("setsid", unix.SYS_SETSID); err != nil {
			return err
		}
		return takeCtty()
	case p.Pgid() == pid:
		_, err := t.Call("setpgid", unix.SYS_SETPGID, 0, 0)
		return err
	}
	return nil
}

// JoinGroup moves task t into process group pgid (as t sees it), which
// exists by now, unless t is in it already or is to stay where it is.
func JoinGroup(t remote.Task, pgid int, stay bool) error {
	cur, err := t.Call("getpgid", unix.SYS_GETPGID, 0)
	if err != nil {
		return err
	}
	if int(cur) == pgid {
		return nil
	}
	if stay {
		return nil
	}
	if _, err := t.Call("setpgid", unix.SYS_SETPGID, 0, uint64(pgid)); err != nil {
		return fmt.Errorf("join group %d: %w", pgid, err)
	}
	return nil
}
