package lazy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The lazy-pages socket (criu's uffd.c): a stream unix socket named
// lazy-pages.socket in the work dir, on which the lazy-pages daemon
// listens and a lazy restore connects. The restore sends, for each
// process of pstree.img, its pid in the images as an int32 then (but for
// a zombie, whose pid is sent negated) a byte carrying its userfaultfd
// (SCM_RIGHTS); then the word "ReSTore Finished" once every task is
// ready to run. The daemon starts its background transfer then.

// SocketName is the lazy-pages socket's name in the work dir.
const SocketName = "lazy-pages.socket"

// finished is criu's LAZY_PAGES_RESTORE_FINISHED.
const finished = 0x52535446

// SocketPath is the lazy-pages socket of a work dir.
func SocketPath(workDir string) string { return filepath.Join(workDir, SocketName) }

// Conn is a lazy restore's connection to the lazy-pages daemon.
type Conn struct {
	c    *net.UnixConn
	path string
}

// Connect connects to the lazy-pages daemon listening in workDir.
func Connect(workDir string) (*Conn, error) {
	path := SocketPath(workDir)
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("connect to the lazy-pages daemon (stasis lazy-pages -D DIR) at %s: %w", path, err)
	}
	return &Conn{c: c, path: path}, nil
}

func (c *Conn) fail(what string, err error) error {
	return fmt.Errorf("lazy-pages socket %s: %s: %w", c.path, what, err)
}

// Send hands the userfaultfd of process pid (its pid in the images) to the
// daemon.
func (c *Conn) Send(pid int, uffd *os.File) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(int32(pid)))
	if _, err := c.c.Write(b[:]); err != nil {
		return c.fail(fmt.Sprintf("pid %d", pid), err)
	}
	if _, _, err := c.c.WriteMsgUnix([]byte{0}, unix.UnixRights(int(uffd.Fd())), nil); err != nil {
		return c.fail(fmt.Sprintf("userfaultfd of pid %d", pid), err)
	}
	return nil
}

// SendZombie tells the daemon that process pid is a zombie: no memory.
func (c *Conn) SendZombie(pid int) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(int32(-pid)))
	if _, err := c.c.Write(b[:]); err != nil {
		return c.fail(fmt.Sprintf("zombie pid %d", pid), err)
	}
	return nil
}

// Finish tells the daemon that the tasks are about to run: it transfers
// the rest of their pages in the background from now on.
func (c *Conn) Finish() error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], finished)
	if _, err := c.c.Write(b[:]); err != nil {
		return c.fail("restore finished", err)
	}
	return nil
}

// Close closes the connection; before Finish, the daemon takes it as a
// failed restore.
func (c *Conn) Close() error { return c.c.Close() }

// listen makes the daemon's socket in workDir (a stale one removed, as
// criu does).
func listen(workDir string) (*net.UnixListener, error) {
	path := SocketPath(workDir)
	if len(path) >= 108 {
		return nil, fmt.Errorf("lazy-pages socket %s: the path is longer than a unix socket's 107 bytes: use a shorter --work-dir", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lazy-pages socket: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("lazy-pages socket: %w", err)
	}
	l.SetUnlinkOnClose(true)
	return l, nil
}

// recvTask reads one process's message from the restore: its pid in the
// images and its userfaultfd (nil for a zombie, whose pid comes negated).
func recvTask(fd int) (int, *os.File, error) {
	var b [4]byte
	if err := readFull(fd, b[:]); err != nil {
		return 0, nil, err
	}
	pid := int(int32(binary.LittleEndian.Uint32(b[:])))
	if pid < 0 {
		return -pid, nil, nil
	}
	if pid == 0 {
		return 0, nil, fmt.Errorf("%w: pid 0", ErrProtocol)
	}
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, flags, _, err := unix.Recvmsg(fd, b[:1], oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return 0, nil, fmt.Errorf("userfaultfd of pid %d: %w", pid, err)
	}
	if n == 0 {
		return 0, nil, fmt.Errorf("userfaultfd of pid %d: %w", pid, ErrRestoreGone)
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return 0, nil, fmt.Errorf("userfaultfd of pid %d: %w: control data truncated", pid, ErrProtocol)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return 0, nil, fmt.Errorf("userfaultfd of pid %d: %w: no fd with it (%v)", pid, ErrProtocol, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, f := range fds {
			unix.Close(f)
		}
		return 0, nil, fmt.Errorf("userfaultfd of pid %d: %w: want one fd (%v)", pid, ErrProtocol, err)
	}
	return pid, os.NewFile(uintptr(fds[0]), fmt.Sprintf("userfaultfd of pid %d", pid)), nil
}

func readFull(fd int, b []byte) error {
	for got := 0; got < len(b); {
		n, err := unix.Read(fd, b[got:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			if got == 0 {
				return io.EOF
			}
			return io.ErrUnexpectedEOF
		}
		got += n
	}
	return nil
}
