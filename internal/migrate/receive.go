package migrate

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/stasis-cr/stasis/internal/seal"
)

// LockFunc locks the connections of the images dir at dir on the target
// and returns what removes the lock (after a failure).
type LockFunc func(dir string) (func(), error)

// RestoreFunc restores the images dir at dir with the restore flags args
// and returns the restored root's pid.
type RestoreFunc func(dir string, args []string) (int, error)

// PrepareFunc starts the restore of the images dir at dir with the
// restore flags args ahead of time: it reads and checks the images and
// waits. run lets it go on and returns the restored root's pid; abort
// gives it up.
type PrepareFunc func(dir string, args []string) (run func() (int, error), abort func(), err error)

// restoreFlags are the restore flags a source may ask for: those a
// migration needs, nothing that runs a program or reads a file of the
// target's choosing.
var restoreFlags = []string{"--tcp-established", "--lazy-pages", "--shell-job", "-j", "--tcp-close", "--ext-unix-sk", "--file-locks", "-l", "--link-remap", "--skip-in-flight"}

// checkArgs refuses the restore flags outside restoreFlags (and
// --pidfile, which the target gives itself).
func checkArgs(args []string) error {
	for _, a := range args {
		if !slices.Contains(restoreFlags, a) && !strings.HasPrefix(a, "--network-lock=") {
			return fmt.Errorf("%w: restore flag %q not allowed from a source", ErrProtocol, a)
		}
	}
	return nil
}

// Receive runs the target's side of one migration on c: the dirs go under
// root, the restore is done by restore. key decrypts a sealed stream. If
// the stream ends before a restore succeeded, what came is removed.
//
// prepare (may be nil) starts a restore the source announces (Prepare)
// before it asks for it.
func Receive(c net.Conn, root string, key []byte, lock LockFunc, restore RestoreFunc, prepare PrepareFunc, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	br := bufio.NewReaderSize(c, 4<<20)
	var rw io.ReadWriter = struct {
		io.Reader
		io.Writer
	}{br, c}
	if seal.Detect(br) {
		sc, err := seal.Server(c, br, LabelToTarget, LabelToSource, key)
		if err != nil {
			return fmt.Errorf("migration stream: %w", err)
		}
		rw = sc
	}
	r := &receiver{root: root, r: bufio.NewReaderSize(rw, 1<<20), w: rw, lock: lock, restore: restore, prepare: prepare, log: log}
	err := r.run()
	if r.prepared != nil {
		r.prepared.abort() // announced, never asked for
	}
	if r.unlock != nil && (err != nil || !r.kept) {
		r.unlock()
	}
	if err != nil || !r.kept {
		for _, d := range slices.Backward(r.dirs) {
			os.RemoveAll(filepath.Join(root, d))
		}
	}
	return err
}

type receiver struct {
	root    string
	r       *bufio.Reader
	w       io.Writer
	restore RestoreFunc
	prepare PrepareFunc
	// prepared: the restore started by a Prepare frame, until a Restore
	// frame takes it.
	prepared *prepared
	lock     LockFunc
	unlock   func()
	log      *slog.Logger
	dirs     []string // made here, in order
	kept     bool     // a restore succeeded: the images stay
	failed   error    // the first failure, reported at the next sync
}

func (r *receiver) run() error {
	for {
		typ, name, n, err := readFrame(r.r)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("migration stream: the source went away: %w", err)
			}
			return fmt.Errorf("migration stream: %w", err)
		}
		switch typ {
		case frameDir:
			if err := cleanName(name, 1); err != nil {
				return err
			}
			p := filepath.Join(r.root, name)
			if err := os.Mkdir(p, 0o700); err != nil {
				return fmt.Errorf("migration stream: %w", err)
			}
			r.dirs = append(r.dirs, name)
		case frameFile:
			if err := r.file(name, n); err != nil {
				return err
			}
		case frameSymlink:
			if err := cleanName(name, 2); err != nil || n > maxLink {
				return fmt.Errorf("%w: symlink %q of %d bytes", ErrProtocol, name, n)
			}
			b := make([]byte, n)
			if _, err := io.ReadFull(r.r, b); err != nil {
				return fmt.Errorf("migration stream: %w", err)
			}
			if err := r.owned(name); err != nil {
				return err
			}
			if err := os.Symlink(string(b), filepath.Join(r.root, name)); err != nil && r.failed == nil {
				r.failed = err
			}
		case frameSync:
			a := answer{ok: r.failed == nil}
			if r.failed != nil {
				a.msg = r.failed.Error()
			}
			if err := writeAnswer(r.w, a); err != nil {
				return fmt.Errorf("migration stream: %w", err)
			}
			if r.failed != nil {
				return r.failed
			}
		case frameLock:
			if err := cleanName(name, 1); err != nil || !slices.Contains(r.dirs, name) {
				return fmt.Errorf("%w: lock of %q, not a dir of this migration", ErrProtocol, name)
			}
			if r.failed == nil && r.unlock == nil {
				r.unlock, r.failed = r.lock(filepath.Join(r.root, name))
			}
		case frameRestore:
			if err := r.doRestore(name, n); err != nil {
				return err
			}
		case framePrepare:
			if err := r.doPrepare(name, n); err != nil {
				return err
			}
		case frameEnd:
			if name != "ok" {
				r.kept = false
			}
			return nil
		default:
			return fmt.Errorf("%w: frame type %d", ErrProtocol, typ)
		}
	}
}

// owned checks that name is in a dir this stream made.
func (r *receiver) owned(name string) error {
	if d, _, ok := strings.Cut(name, "/"); !ok || !slices.Contains(r.dirs, d) {
		return fmt.Errorf("%w: %q is not in a dir of this migration", ErrProtocol, name)
	}
	return nil
}

func (r *receiver) file(name string, n int64) error {
	if err := cleanName(name, 2); err != nil {
		return err
	}
	if err := r.owned(name); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(r.root, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("migration stream: %w", err)
	}
	defer f.Close()
	w, err := io.CopyN(f, r.r, n)
	if err != nil {
		return fmt.Errorf("migration stream: %s at offset %d of %d: %w", name, w, n, err)
	}
	return nil
}

// prepared is a restore started ahead (PrepareFunc).
type prepared struct {
	name, args string
	run        func() (int, error)
	abort      func()
}

// restoreArgs reads and checks the flags of a restore or prepare frame
// for dir name.
func (r *receiver) restoreArgs(name string, n int64) ([]string, error) {
	if err := cleanName(name, 1); err != nil {
		return nil, err
	}
	if n > maxArgs {
		return nil, fmt.Errorf("%w: restore flags of %d bytes", ErrProtocol, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.r, b); err != nil {
		return nil, fmt.Errorf("migration stream: %w", err)
	}
	var args []string
	if len(b) > 0 {
		args = strings.Split(string(b), "\x00")
	}
	if err := checkArgs(args); err != nil {
		return nil, err
	}
	if !slices.Contains(r.dirs, name) {
		return nil, fmt.Errorf("%w: restore of %q, not a dir of this migration", ErrProtocol, name)
	}
	return args, nil
}

func (r *receiver) doPrepare(name string, n int64) error {
	args, err := r.restoreArgs(name, n)
	if err != nil {
		return err
	}
	if r.prepare == nil || r.prepared != nil || r.failed != nil {
		return nil // the restore will be started when asked for
	}
	r.log.Info("preparing the restore", "dir", name, "flags", args)
	p := &prepared{name: name, args: strings.Join(args, "\x00")}
	if p.run, p.abort, err = r.prepare(filepath.Join(r.root, name), args); err != nil {
		// Started when asked for, as without Prepare.
		r.log.Warn("preparing the restore failed", "dir", name, "err", err)
		return nil
	}
	r.prepared = p
	return nil
}

func (r *receiver) doRestore(name string, n int64) error {
	args, err := r.restoreArgs(name, n)
	a := answer{}
	start := time.Now()
	if p := r.prepared; err == nil && p != nil {
		r.prepared = nil
		if p.name == name && p.args == strings.Join(args, "\x00") {
			r.log.Info("restoring (prepared)", "dir", name, "flags", args)
			a.pid, err = p.run()
		} else {
			p.abort()
			p = nil
		}
		if p == nil {
			a.pid, err = r.restore(filepath.Join(r.root, name), args)
		}
	} else if err == nil {
		r.log.Info("restoring", "dir", name, "flags", args)
		a.pid, err = r.restore(filepath.Join(r.root, name), args)
	}
	a.restore = time.Since(start).Microseconds()
	if err != nil {
		a.msg = err.Error()
	} else {
		a.ok, r.kept = true, true
	}
	if werr := writeAnswer(r.w, a); werr != nil && err == nil {
		err = fmt.Errorf("migration stream: %w", werr)
	}
	return err
}
