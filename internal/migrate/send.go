package migrate

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Sender is the source's end of the stream.
type Sender struct {
	r io.Reader
	w *bufio.Writer
	// Sent counts the bytes of files and links sent (before any sealing).
	Sent int64
}

// NewSender speaks the protocol over rw (sealed already if asked).
func NewSender(rw io.ReadWriter) *Sender {
	return &Sender{r: rw, w: bufio.NewWriterSize(rw, 4<<20)}
}

// SendDir sends the images dir local as the target's dir name: its
// regular files and symlinks (the "parent" link of a chain); sockets (a
// memory tracker's) and the rest stay. It returns once the target has
// stored it all.
func (s *Sender) SendDir(local, name string) error {
	if err := cleanName(name, 1); err != nil {
		return err
	}
	ents, err := os.ReadDir(local)
	if err != nil {
		return fmt.Errorf("send %s: %w", local, err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	if err := writeFrame(s.w, frameDir, name, 0); err != nil {
		return s.fail(err)
	}
	for _, e := range ents {
		p := filepath.Join(local, e.Name())
		switch {
		case e.Type()&os.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("send %s: %w", p, err)
			}
			if err := writeFrame(s.w, frameSymlink, name+"/"+e.Name(), int64(len(l))); err != nil {
				return s.fail(err)
			}
			if _, err := s.w.WriteString(l); err != nil {
				return s.fail(err)
			}
			s.Sent += int64(len(l))
		case e.Type().IsRegular():
			if strings.HasSuffix(e.Name(), ".log") {
				continue // the dump's own log, still being written
			}
			if err := s.sendFile(p, name+"/"+e.Name()); err != nil {
				return err
			}
		}
	}
	return s.sync()
}

func (s *Sender) sendFile(p, name string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("send %s: %w", p, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("send %s: %w", p, err)
	}
	if err := writeFrame(s.w, frameFile, name, st.Size()); err != nil {
		return s.fail(err)
	}
	n, err := io.CopyN(s.w, f, st.Size())
	s.Sent += n
	if err != nil {
		return fmt.Errorf("send %s at offset %d: %w", p, n, err)
	}
	return nil
}

func (s *Sender) fail(err error) error { return fmt.Errorf("send to the target: %w", err) }

func (s *Sender) sync() error {
	if err := writeFrame(s.w, frameSync, "", 0); err != nil {
		return s.fail(err)
	}
	if err := s.w.Flush(); err != nil {
		return s.fail(err)
	}
	a, err := readAnswer(s.r)
	if err != nil {
		return err
	}
	if !a.ok {
		return fmt.Errorf("%w: %s", ErrTarget, a.msg)
	}
	return nil
}

// Prepare asks the target to start the restore of its dir name with the
// restore flags args now, while the tree is still here: it reads and
// checks the images, then waits for Restore with the same dir and flags
// (or for the end of the stream: it gives up). It does not wait for an
// answer; a failure comes with Restore's.
func (s *Sender) Prepare(name string, args []string) error {
	return s.restoreFrame(framePrepare, name, args)
}

func (s *Sender) restoreFrame(typ byte, name string, args []string) error {
	if err := cleanName(name, 1); err != nil {
		return err
	}
	a := strings.Join(args, "\x00")
	if err := writeFrame(s.w, typ, name, int64(len(a))); err != nil {
		return s.fail(err)
	}
	if _, err := s.w.WriteString(a); err != nil {
		return s.fail(err)
	}
	if err := s.w.Flush(); err != nil {
		return s.fail(err)
	}
	return nil
}

// Restore asks the target to restore its dir name with the restore flags
// args, and returns the restored root's pid and the restore's time there.
func (s *Sender) Restore(name string, args []string) (int, time.Duration, error) {
	if err := s.restoreFrame(frameRestore, name, args); err != nil {
		return 0, 0, err
	}
	ans, err := readAnswer(s.r)
	if err != nil {
		return 0, 0, err
	}
	took := time.Duration(ans.restore) * time.Microsecond
	if !ans.ok {
		return 0, took, fmt.Errorf("%w: %s", ErrTarget, ans.msg)
	}
	return ans.pid, took, nil
}

// Lock asks the target to lock the connections of its dir name (the
// final images, sent while the tree is frozen) before their address
// moves there: nothing answers their packets with a reset until the
// restore has them.
func (s *Sender) Lock(name string) error {
	if err := writeFrame(s.w, frameLock, name, 0); err != nil {
		return s.fail(err)
	}
	return s.sync()
}

// End tells the target the migration is over; ok false: remove what it
// received.
func (s *Sender) End(ok bool) error {
	name := "ok"
	if !ok {
		name = "failed"
	}
	if err := writeFrame(s.w, frameEnd, name, 0); err != nil {
		return s.fail(err)
	}
	return s.w.Flush()
}
