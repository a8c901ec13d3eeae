package migrate

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stasis-cr/stasis/internal/seal"
)

// run sends dirs to a receiver over a pipe and asks for a restore of the
// last; it returns the restored pid and the receiver's error.
func run(t *testing.T, root string, key []byte, o seal.Options, send func(s *Sender) error) (error, error) {
	t.Helper()
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Receive(b, root, key, func(string) (func(), error) { return func() {}, nil },
			func(dir string, args []string) (int, error) {
				if _, err := os.Stat(filepath.Join(dir, "pages-1.img")); err != nil {
					return 0, err
				}
				return 42, nil
			}, nil, nil)
		b.Close()
	}()
	var c net.Conn = a
	if o.Enabled() {
		sc, err := seal.Client(a, LabelToTarget, LabelToSource, o)
		if err != nil {
			t.Fatal(err)
		}
		c = sc
	}
	serr := send(NewSender(c))
	c.Close()
	return serr, <-done
}

func srcDir(t *testing.T) string {
	d := t.TempDir()
	os.WriteFile(filepath.Join(d, "pages-1.img"), []byte(strings.Repeat("x", 100000)), 0o600)
	os.WriteFile(filepath.Join(d, "dump.log"), []byte("log"), 0o600)
	os.Symlink("../1", filepath.Join(d, "parent"))
	return d
}

func TestSendReceive(t *testing.T) {
	key := make([]byte, 32)
	for _, o := range []seal.Options{{}, {Compress: true, Key: key}} {
		root := t.TempDir()
		src := srcDir(t)
		var pid int
		serr, rerr := run(t, root, key, o, func(s *Sender) error {
			if err := s.SendDir(src, "1"); err != nil {
				return err
			}
			if err := s.SendDir(src, "final"); err != nil {
				return err
			}
			if err := s.Lock("final"); err != nil {
				return err
			}
			var err error
			if pid, _, err = s.Restore("final", []string{"--tcp-established"}); err != nil {
				return err
			}
			return s.End(true)
		})
		if serr != nil || rerr != nil || pid != 42 {
			t.Fatalf("%+v: send %v, receive %v, pid %d", o, serr, rerr, pid)
		}
		if b, err := os.ReadFile(filepath.Join(root, "final", "pages-1.img")); err != nil || len(b) != 100000 {
			t.Errorf("pages not received: %v", err)
		}
		if l, _ := os.Readlink(filepath.Join(root, "final", "parent")); l != "../1" {
			t.Errorf("parent link %q", l)
		}
		if _, err := os.Stat(filepath.Join(root, "final", "dump.log")); err == nil {
			t.Errorf("the log was sent")
		}
	}
}

// A source asking for flags outside the list, or names outside the
// root, is refused, and what came is removed.
func TestReceiveRefuses(t *testing.T) {
	root := t.TempDir()
	src := srcDir(t)
	serr, rerr := run(t, root, nil, seal.Options{}, func(s *Sender) error {
		if err := s.SendDir(src, "final"); err != nil {
			return err
		}
		_, _, err := s.Restore("final", []string{"--action-script", "/bin/true"})
		return err
	})
	if !errors.Is(serr, ErrTarget) || rerr == nil {
		t.Fatalf("send %v, receive %v: want both to fail", serr, rerr)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("left in the target dir: %v", ents)
	}
	for _, n := range []string{"../x", "/abs", "a/b", ".", ""} {
		if cleanName(n, 1) == nil {
			t.Errorf("name %q accepted", n)
		}
	}
}

// A stream cut in the middle leaves nothing on the target.
func TestReceiveCut(t *testing.T) {
	root := t.TempDir()
	src := srcDir(t)
	_, rerr := run(t, root, nil, seal.Options{}, func(s *Sender) error {
		return s.SendDir(src, "1")
	})
	if rerr == nil {
		t.Fatal("the receiver did not fail on a stream that ends without End")
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("left in the target dir: %v", ents)
	}
}
