package sockets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
)

// The file of a unix socket bound to a path, when it is no longer at
// that path: deleted (a FIFO, a directory or another socket may stand
// there now, or its directory may be gone) or moved (renamed, or its
// directory renamed). The socket must keep its name (getsockname) and
// its file must be where the program left it, or nowhere.
//
// A socket is bound only by its name, so the restore binds it through
// the name ("aside"): whatever stands at the name is renamed away for
// the bind, missing directories are made for it; then the socket's file
// is moved where it was (a moved one) or to a temporary name beside the
// name (a deleted one: peers still connect to it through that until the
// sockets are built, then it is unlinked), and the name's own file put
// back. criu binds a deleted socket the same way (it renames what stands
// at the name) but restores a moved one as deleted, and fails if its
// directory is gone.
//
// Two facts criu's format has no field for travel as fields criu's
// readers skip: the moved file's path in UnixSkEntry (field
// fieldUnixFilePath), and the sender's address of a queued datagram in
// SkPacketEntry's field 3, which criu's sk-packet.proto reserves for it.

const (
	fieldUnixFilePath = 1501 // UnixSkEntry: where a moved socket's file is (stasis)
	fieldPacketAddr   = 3    // SkPacketEntry: the sender's address (criu's reserved "addr")
)

func setUnknownBytes(m proto.Message, num protowire.Number, v []byte) {
	r := m.ProtoReflect()
	b := append([]byte{}, r.GetUnknown()...)
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendBytes(b, v)
	r.SetUnknown(b)
}

func unknownBytes(m proto.Message, num protowire.Number) ([]byte, error) {
	b := m.ProtoReflect().GetUnknown()
	var out []byte
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil, protowire.ParseError(m)
			}
			out, b = v, b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(n, typ, b)
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		b = b[m:]
	}
	return out, nil
}

// movedFile is the path of a moved socket file, "" if none.
func movedFile(ue *sk_unix.UnixSkEntry) (string, error) {
	b, err := unknownBytes(ue, fieldUnixFilePath)
	return string(b), err
}

func setMovedFile(ue *sk_unix.UnixSkEntry, path string) {
	setUnknownBytes(ue, fieldUnixFilePath, []byte(path))
}

// packetAddr is the raw address (sun_path as sock_diag names sockets)
// of the socket that sent a queued message, nil if unbound or unknown.
func packetAddr(e *sk_packet.SkPacketEntry) ([]byte, error) {
	return unknownBytes(e, fieldPacketAddr)
}

func setPacketAddr(e *sk_packet.SkPacketEntry, addr []byte) {
	if len(addr) > 0 {
		setUnknownBytes(e, fieldPacketAddr, addr)
	}
}

// rawUnixAddr turns the address recvmsg gave (x/sys/unix writes an
// abstract name's leading NUL as '@') back into the kernel's form.
func rawUnixAddr(sa unix.Sockaddr) []byte {
	a, ok := sa.(*unix.SockaddrUnix)
	if !ok || a.Name == "" {
		return nil
	}
	if a.Name[0] == '@' {
		return append([]byte{0}, a.Name[1:]...)
	}
	return []byte(a.Name)
}

// sameUnixName says two names of sock_diag or recvmsg are one address:
// a path up to its first NUL, an abstract name whole.
func sameUnixName(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	if a[0] == 0 || b[0] == 0 {
		return string(a) == string(b)
	}
	return unixPath(a) == unixPath(b)
}

// aside is a bind through a name whose place is taken or whose directory
// is gone: what it moved and made, to put back.
type aside struct {
	name  string   // the absolute path bound
	moved string   // what stood at name, renamed to this; "" if nothing
	made  []string // directories made for the bind, innermost last
}

// prepare frees name for a bind: makes its missing directories and moves
// what stands there aside.
func (a *aside) prepare() error {
	dir := filepath.Dir(a.name)
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || d == "/" || d == "." {
			break
		}
		missing = append([]string{d}, missing...)
	}
	for _, d := range missing {
		if err := files.CreateDirOK(d); err != nil {
			return err
		}
		if err := unix.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("make the directory %s to bind %s in: %w", d, a.name, os.NewSyscallError("mkdir", err))
		}
		a.made = append(a.made, d)
	}
	if err := files.CreateDirOK(a.name); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(a.name, &st); err != nil {
		return nil
	}
	tmp := tempBeside(a.name, "aside")
	if err := unix.Rename(a.name, tmp); err != nil {
		return fmt.Errorf("move %s aside to bind a socket to its name: %w", a.name, os.NewSyscallError("rename", err))
	}
	a.moved = tmp
	return nil
}

// putBack puts back what stood at the name. The directories made stay
// until done (a deleted socket's file waits in them).
func (a *aside) putBack() error {
	if a.moved == "" {
		return nil
	}
	err := unix.Rename(a.moved, a.name)
	if err != nil {
		err = fmt.Errorf("put %s back at %s: %w", a.moved, a.name, os.NewSyscallError("rename", err))
	}
	a.moved = ""
	return err
}

// done removes the directories made for the bind.
func (a *aside) done() error {
	var errs []error
	if err := a.putBack(); err != nil {
		errs = append(errs, err)
	}
	for i := len(a.made) - 1; i >= 0; i-- {
		if err := unix.Rmdir(a.made[i]); err != nil && err != unix.ENOTEMPTY {
			errs = append(errs, fmt.Errorf("remove %s, made to bind a socket in: %w", a.made[i], os.NewSyscallError("rmdir", err)))
		}
	}
	a.made = nil
	return errors.Join(errs...)
}

var tempSeq int

// tempBeside is an unused name in the directory of path.
func tempBeside(path, what string) string {
	tempSeq++
	return filepath.Join(filepath.Dir(path), ".stasis-"+what+"-"+strconv.Itoa(os.Getpid())+"-"+strconv.Itoa(tempSeq))
}

// bindAside binds s to its name, whose file must then be at want (a
// moved socket) or nowhere (want ""): s.at is where its file is while
// the sockets are built, a temporary name for a deleted one.
func (b *unixBuild) bindAside(s *usk, a *unix.SockaddrUnix, want string) (err error) {
	// Names are the tree's (a container's: through its root, InRoot).
	host := b.r.InRoot(a.Name)
	s.aside = &aside{name: host}
	defer func() {
		if perr := s.aside.putBack(); perr != nil && err == nil {
			err = perr
		}
	}()
	if err := s.aside.prepare(); err != nil {
		return err
	}
	if err := bindUnix(s, a, b.r.Root); err != nil {
		return fmt.Errorf("bind a unix socket to %s: %w", strings.TrimPrefix(unixName(s.ue.GetName()), "bound to "), err)
	}
	if err := setUnixPerms(s, host); err != nil {
		return err
	}
	to := want
	if to == "" {
		to = tempBeside(a.Name, "sk")
	} else if err := clearMovedPlace(b.r.InRoot(want)); err != nil {
		return err
	}
	if err := unix.Rename(host, b.r.InRoot(to)); err != nil {
		return fmt.Errorf("move the file of the socket bound to %s to %s: %w", a.Name, to, os.NewSyscallError("rename", err))
	}
	s.at = to
	if want == "" {
		s.tmp = b.r.InRoot(to)
	}
	return nil
}

// clearMovedPlace readies the place of a moved socket's file: its
// directory must be there, and only a stale socket file may stand there.
func clearMovedPlace(path string) error {
	if err := files.CreateDirOK(path); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s, where the socket's file was, is taken by another file: remove it or move it away", path)
	}
	return os.NewSyscallError("unlink", unix.Unlink(path))
}

// checkMovedFile checks the moved-file path of an entry as files'
// CheckPaths checks the others.
func checkMovedFile(ue *sk_unix.UnixSkEntry) (string, error) {
	p, err := movedFile(ue)
	if err != nil || p == "" {
		return "", err
	}
	if err := images.CheckPath(p, false); err != nil {
		return "", fmt.Errorf("file id %d (unix socket's moved file): %w", ue.GetId(), err)
	}
	return p, nil
}
