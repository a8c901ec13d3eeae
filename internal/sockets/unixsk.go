package sockets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	sk_unix "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-unix"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

// Unix sockets (criu's sk-unix.c). Each socket is a UnixSkEntry in
// files.img: its type, state, name, peer (by inode), shutdown state and
// options; what is queued to be read goes to sk-queues.img, one
// SkPacketEntry per message (id_for: the file id of the socket that will
// read it) followed by the bytes. The peer and the connections waiting
// in a listener's backlog come from sock_diag (sockdiag.go).
//
// The restore builds every unix socket of the dump at once, in stasis,
// the first time one is asked for: a socket is tied to its peer, and a
// client waiting in a backlog to its listener, whichever task holds them.

func init() {
	socketFamilies[unix.AF_UNIX] = dumpUnix
	files.Register(&files.Kind{Type: fdinfo.FdTypes_UNIXSK, Check: checkUnix, Write: writeUnix, Open: openUnix})
}

// criu's USK_* flags (criu/include/sockets.h).
const (
	uskExtern = 1 << 0 // the entry is a peer outside the tree, never opened
)

// unixDump is the dump state of the unix sockets.
type unixDump struct {
	diag    map[uint32]*unixDiag // every unix socket of the netns, read once
	socks   map[uint32]*unixSock // the tree's, by inode
	order   []uint32
	packets []unixPacket
	externs map[uint32]bool // peers outside the tree written as USK_EXTERN
}

type unixSock struct {
	fd *files.Fd
	ue *sk_unix.UnixSkEntry
	d  *unixDiag
}

func unixsks(t *files.Table) *unixDump {
	return files.DumpState(t, "unixsk", func() *unixDump {
		return &unixDump{socks: map[uint32]*unixSock{}, externs: map[uint32]bool{}}
	})
}

func dumpUnix(t *files.Table, fd *files.Fd, sk int) (*fdinfo.FileEntry, error) {
	st := unixsks(t)
	if st.diag == nil {
		var err error
		if st.diag, err = readUnixDiag(sk); err != nil {
			return nil, fmt.Errorf("%s: %w", fd, err)
		}
	}
	ino := uint32(fd.Stat.Ino)
	d := st.diag[ino]
	if d == nil {
		return nil, &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: "a unix socket of another network namespace", Target: fd.Target}
	}
	opts, err := dumpUnixOpts(sk)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", fd, fd.Target, err)
	}
	ue := &sk_unix.UnixSkEntry{
		Id:      proto.Uint32(fd.ID),
		Ino:     proto.Uint32(ino),
		Type:    proto.Uint32(uint32(d.Type)),
		State:   proto.Uint32(uint32(d.State)),
		Flags:   proto.Uint32(fd.Flags()),
		Uflags:  proto.Uint32(0),
		Backlog: proto.Uint32(0),
		Peer:    proto.Uint32(d.Peer),
		Fown:    files.AnonFown(),
		Opts:    opts,
		Name:    append([]byte{}, d.Name...),
	}
	if d.State == linux.TCPListen {
		ue.Backlog = proto.Uint32(d.Wqueue)
	}
	if d.Shutdown != 0 {
		ue.Shutdown = sk_opts.SkShutdown(d.Shutdown & 3).Enum()
	}
	if len(d.Name) > 0 && d.Name[0] != 0 {
		if err := unixFile(sk, ue); err != nil {
			return nil, fmt.Errorf("%s (%s bound to %s): %w", fd, fd.Target, d.Name, err)
		}
	}
	// Known before its queue is read: a preflight that refuses the queue
	// must still find this socket in the tree as its peer's peer.
	st.socks[ino] = &unixSock{fd: fd, ue: ue, d: d}
	st.order = append(st.order, ino)
	if d.State != linux.TCPListen {
		if err := st.dumpQueue(t, fd, sk, int(d.Type)); err != nil {
			var ue *files.UnsupportedError
			if errors.As(err, &ue) {
				return nil, err // it names the socket already
			}
			return nil, fmt.Errorf("%s (%s): queued data: %w", fd, fd.Target, err)
		}
	}
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Usk: ue}, nil
}

// unixFile records the socket file of a socket bound to a path: its
// mode and owner, the directory of a relative name and whether it was
// unlinked, through the file SIOCUNIXFILE opens (O_PATH).
func unixFile(sk int, ue *sk_unix.UnixSkEntry) error {
	const siocUnixFile = 0x89e0 // SIOCPROTOPRIVATE, include/uapi/linux/un.h
	f, err := unix.IoctlRetInt(sk, siocUnixFile)
	if err != nil {
		return os.NewSyscallError("ioctl SIOCUNIXFILE", err)
	}
	defer unix.Close(f)
	var st unix.Stat_t
	if err := unix.Fstat(f, &st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	ue.FilePerms = &sk_unix.FilePermsEntry{Mode: proto.Uint32(st.Mode), Uid: proto.Uint32(st.Uid), Gid: proto.Uint32(st.Gid)}
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f))
	if err != nil {
		return err
	}
	if p, ok := strings.CutSuffix(path, " (deleted)"); ok {
		path = p
		ue.Deleted = proto.Bool(true)
	}
	// The name may end with the NUL the program counted in its address
	// length: the path is what comes before it.
	if name := unixPath(ue.Name); name[0] != '/' {
		dir, ok := strings.CutSuffix(path, "/"+filepath.Clean(name))
		if !ok {
			return fmt.Errorf("relative name %q is not the end of its file's path %s", name, path)
		}
		ue.NameDir = proto.String(dir)
	} else if !ue.GetDeleted() && path != name {
		// Renamed, or its directory was: the file is elsewhere now.
		setMovedFile(ue, path)
	}
	return nil
}

func dumpUnixOpts(sk int) (*sk_opts.SkOptsEntry, error) {
	var errs []error
	geti := func(opt int, name string) int {
		v, err := unix.GetsockoptInt(sk, unix.SOL_SOCKET, opt)
		if err != nil {
			errs = append(errs, os.NewSyscallError("getsockopt "+name, err))
		}
		return v
	}
	gett := func(opt int, name string) *unix.Timeval {
		v, err := unix.GetsockoptTimeval(sk, unix.SOL_SOCKET, opt)
		if err != nil {
			errs = append(errs, os.NewSyscallError("getsockopt "+name, err))
			return &unix.Timeval{}
		}
		return v
	}
	snd, rcv := gett(unix.SO_SNDTIMEO, "SO_SNDTIMEO"), gett(unix.SO_RCVTIMEO, "SO_RCVTIMEO")
	o := &sk_opts.SkOptsEntry{
		SoSndbuf:     proto.Uint32(uint32(geti(unix.SO_SNDBUF, "SO_SNDBUF"))),
		SoRcvbuf:     proto.Uint32(uint32(geti(unix.SO_RCVBUF, "SO_RCVBUF"))),
		SoSndTmoSec:  proto.Uint64(uint64(snd.Sec)),
		SoSndTmoUsec: proto.Uint64(uint64(snd.Usec)),
		SoRcvTmoSec:  proto.Uint64(uint64(rcv.Sec)),
		SoRcvTmoUsec: proto.Uint64(uint64(rcv.Usec)),
		SoPasscred:   proto.Bool(geti(unix.SO_PASSCRED, "SO_PASSCRED") != 0),
		SoPasssec:    proto.Bool(geti(unix.SO_PASSSEC, "SO_PASSSEC") != 0),
		SoPriority:   proto.Uint32(uint32(geti(unix.SO_PRIORITY, "SO_PRIORITY"))),
		SoRcvlowat:   proto.Uint32(uint32(geti(unix.SO_RCVLOWAT, "SO_RCVLOWAT"))),
		SoMark:       proto.Uint32(uint32(geti(unix.SO_MARK, "SO_MARK"))),
	}
	return o, errors.Join(errs...)
}

// checkUnix resolves what only the whole tree tells: a peer outside it,
// a client waiting in a listener's backlog.
func checkUnix(t *files.Table) error {
	st := unixsks(t)
	for _, ino := range st.order {
		if err := t.Refuse(st.resolve(t, st.socks[ino])); err != nil {
			return err
		}
	}
	return nil
}

// writeUnix writes sk-queues.img.
func writeUnix(t *files.Table, dir *images.Dir) error {
	st := unixsks(t)
	if len(st.order) == 0 {
		return nil
	}
	return st.writeQueues(dir)
}

// resolve checks the peer of s and, for a client waiting in a backlog,
// makes its listener its peer (criu's in-flight connections), as the
// restore connects it to the listener again.
func (st *unixDump) resolve(t *files.Table, s *unixSock) error {
	d := s.d
	switch {
	case d.Peer != 0:
		p := st.socks[d.Peer]
		if p == nil {
			return st.outsidePeer(t, s)
		}
		if p.d.Peer != d.Ino && len(p.d.Name) == 0 {
			return fmt.Errorf("%s (socket:[%d]) is connected to socket:[%d] (%s), which is connected elsewhere and has no name to connect to again",
				s.fd, d.Ino, p.d.Ino, p.fd)
		}
	case d.State == linux.TCPListen:
		for _, c := range d.Icons {
			if c == 0 {
				return fmt.Errorf("%s (socket:[%d], listening on %s) has a connection waiting whose client is closed: what it sent cannot be read back; accept it before the dump",
					s.fd, d.Ino, unixName(d.Name))
			}
			if st.socks[c] == nil {
				return fmt.Errorf("%s (socket:[%d], listening on %s) has a connection waiting from socket:[%d]%s, outside the dumped tree: it would be lost; accept it before the dump",
					s.fd, d.Ino, unixName(d.Name), c, holderOf(c))
			}
		}
	case d.State == linux.TCPEstablished && d.Type != unix.SOCK_DGRAM:
		for _, ino := range st.order {
			if l := st.socks[ino]; l.d.State == linux.TCPListen && slices.Contains(l.d.Icons, d.Ino) {
				if d.Wqueue != 0 {
					return fmt.Errorf("%s (socket:[%d]) has sent %d bytes on a connection %s (%s) has not accepted yet: they cannot be read back; dump once it is accepted",
						s.fd, d.Ino, d.Wqueue, l.fd, unixName(l.d.Name))
				}
				s.ue.Peer = proto.Uint32(l.d.Ino)
				return nil
			}
		}
		for _, l := range st.diag {
			if l.State == linux.TCPListen && slices.Contains(l.Icons, d.Ino) {
				return fmt.Errorf("%s (socket:[%d]) waits to be accepted by socket:[%d] (listening on %s%s), outside the dumped tree: dump the tree that holds both",
					s.fd, d.Ino, l.Ino, unixName(l.Name), holderOf(l.Ino))
			}
		}
		// A connection whose peer is closed has both directions shut
		// down; it is made again as a pair whose other end is closed.
		if d.Shutdown != 3 {
			return fmt.Errorf("%s (socket:[%d]) is connected to nothing and not shut down", s.fd, d.Ino)
		}
	}
	return nil
}

// outsidePeer accepts a peer outside the tree when the user said so
// (-x for a datagram socket connected to a named peer, --external
// unix[INO]) by writing it as an external entry, as criu, or refuses it.
func (st *unixDump) outsidePeer(t *files.Table, s *unixSock) error {
	d := s.d
	p := st.diag[d.Peer]
	ext := slices.Contains(t.Opts.External, fmt.Sprintf("unix[%d]", d.Ino))
	dgram := d.Type == unix.SOCK_DGRAM && p != nil && len(p.Name) > 0
	if !ext && !(dgram && t.Opts.ExtUnixSk) {
		var name []byte
		if p != nil {
			name = p.Name
		}
		hint := fmt.Sprintf("dump the tree that holds both, or dump with --external unix[%d] and restore with --inherit-fd fd[N]:socket:[%d]", d.Ino, d.Ino)
		if dgram {
			hint = "dump with -x/--ext-unix-sk (it is connected again to that name at restore), or " + hint
		} else if t.Opts.ExtUnixSk {
			hint = "-x/--ext-unix-sk takes datagram sockets connected to a named peer only; " + hint
		}
		return fmt.Errorf("%s (socket:[%d], a unix %s socket) is connected to socket:[%d] (%s)%s, outside the dumped tree: %s",
			s.fd, d.Ino, unixTypeName(d.Type), d.Peer, unixName(name), holderOf(d.Peer), hint)
	}
	if !ext && d.Rqueue != 0 {
		return fmt.Errorf("%s (socket:[%d]) has %d bytes queued from its peer socket:[%d] (%s) outside the tree: only that peer could queue them again; read them before the dump",
			s.fd, d.Ino, d.Rqueue, d.Peer, unixName(p.Name))
	}
	if st.externs[d.Peer] {
		return nil
	}
	st.externs[d.Peer] = true
	typ, name := d.Type, []byte{}
	if p != nil {
		typ, name = p.Type, p.Name
	}
	e := &sk_unix.UnixSkEntry{
		Ino: proto.Uint32(d.Peer), Type: proto.Uint32(uint32(typ)), State: proto.Uint32(linux.TCPListen),
		Flags: proto.Uint32(0), Uflags: proto.Uint32(uskExtern), Backlog: proto.Uint32(0), Peer: proto.Uint32(0),
		Fown: files.AnonFown(), Opts: emptySkOpts(), Name: name,
	}
	id := t.Add(&fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Usk: e})
	e.Id = proto.Uint32(id)
	return nil
}

func emptySkOpts() *sk_opts.SkOptsEntry {
	return &sk_opts.SkOptsEntry{SoSndbuf: proto.Uint32(0), SoRcvbuf: proto.Uint32(0),
		SoSndTmoSec: proto.Uint64(0), SoSndTmoUsec: proto.Uint64(0), SoRcvTmoSec: proto.Uint64(0), SoRcvTmoUsec: proto.Uint64(0)}
}

// unixName says a socket's address as ss(8) does: a path, @name for an
// abstract one.
func unixName(name []byte) string {
	switch {
	case len(name) == 0:
		return "unbound"
	case name[0] == 0:
		return "abstract @" + strings.ReplaceAll(string(name[1:]), "\x00", "@")
	}
	return "bound to " + unixPath(name)
}

func unixTypeName(typ uint8) string {
	switch typ {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_DGRAM:
		return "datagram"
	case unix.SOCK_SEQPACKET:
		return "seqpacket"
	}
	return "type " + strconv.Itoa(int(typ))
}

// holderOf names a process holding socket:[ino], for errors: " held by
// fd N of pid P (comm)", or "" if none is found.
func holderOf(ino uint32) string {
	want := fmt.Sprintf("socket:[%d]", ino)
	if h, ok := files.FindHolder(files.NotSelf, func(_ int, _, target string) bool { return target == want }); ok {
		return " held by " + h.String()
	}
	return ""
}

// unixPath is the path of a name bound in the filesystem: the kernel
// keeps its terminating NUL, and criu's images keep the name as sock_diag
// gives it.
func unixPath(name []byte) string {
	if i := slices.Index(name, 0); i >= 0 {
		name = name[:i]
	}
	return string(name)
}

// unixRestore is the restore state of the unix sockets: every socket of
// the dump, built at once, by entry id, until a task takes it.
type unixRestore struct {
	fds   map[uint32]int // raw fds, non-blocking until handed out
	built bool
	err   error
}

func openUnix(r *files.Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	ue := fe.GetUsk()
	if ue == nil {
		return nil, files.NotKind(fe, "a unix socket")
	}
	st := files.RestoreState(r, "unixsk", func() *unixRestore { return &unixRestore{} })
	if !st.built {
		st.built = true
		st.fds, st.err = buildUnix(r)
		r.OnDone(func() error {
			for _, fd := range st.fds {
				unix.Close(fd)
			}
			st.fds = nil
			return nil
		})
	}
	if st.err != nil {
		return nil, st.err
	}
	id := fe.GetId()
	fd, ok := st.fds[id]
	if !ok {
		return nil, fmt.Errorf("reopen socket:[%d] (file id %d): not a socket of the tree (an external peer, or opened twice): %w", ue.GetIno(), id, images.ErrCorrupt)
	}
	delete(st.fds, id)
	// Wrapped blocking (see NewAnonFile), then given the entry's flags.
	if err := files.AnonSetfl(fd, 0); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := files.NewAnonFile(fd, fmt.Sprintf("socket:[%d]", ue.GetIno()))
	if err := files.AnonSetfl(fd, ue.GetFlags()); err != nil {
		f.Close()
		return nil, fmt.Errorf("reopen socket:[%d] (file id %d): %w", ue.GetIno(), id, err)
	}
	return f, nil
}

// usk is one unix socket being restored.
type usk struct {
	ue      *sk_unix.UnixSkEntry
	fd      int // -1 until made
	other   int // the closed end of a connection whose peer was gone, or -1
	paired  bool
	inherit bool
	packets []unixPacket
	moved   string // where a moved socket's file must be (unixfile.go)
	at      string // where its file is while the sockets are built, if not at its name
	tmp     string // the temporary name of a deleted socket's file, unlinked at the end
	aside   *aside // what a bind through its name moved and made
}

func (s *usk) String() string {
	return fmt.Sprintf("socket:[%d] (file id %d, unix %s, %s)", s.ue.GetIno(), s.ue.GetId(), unixTypeName(uint8(s.ue.GetType())), unixName(s.ue.GetName()))
}

func (s *usk) extern() bool { return s.ue.GetUflags()&uskExtern != 0 }

// addr is where the socket is bound, to connect or send to it.
func (s *usk) addr() *unix.SockaddrUnix {
	if s.at != "" {
		return &unix.SockaddrUnix{Name: s.at}
	}
	name := s.ue.GetName()
	if len(name) > 0 && name[0] == 0 {
		return &unix.SockaddrUnix{Name: string(name)}
	}
	path := unixPath(name)
	if d := s.ue.GetNameDir(); d != "" && !filepath.IsAbs(path) {
		path = filepath.Join(d, path)
	}
	return &unix.SockaddrUnix{Name: path}
}

// unixBuild makes the sockets of a dump again, in stasis.
type unixBuild struct {
	r     *files.Restorer
	all   []*usk // by id
	byIno map[uint32]*usk
	byID  map[uint32]*usk
}

// buildUnix makes every unix socket of files.img: pairs whose both ends
// are in the dump with socketpair, the others with socket, bind, listen
// and connect, clients waiting in a backlog last; then refills the
// queues through the peers and shuts down what was shut down.
func buildUnix(r *files.Restorer) (fds map[uint32]int, err error) {
	b := &unixBuild{r: r, byIno: map[uint32]*usk{}, byID: map[uint32]*usk{}}
	if err := b.collect(); err != nil {
		return nil, err
	}
	if err := readUnixQueues(r.Dir, b.byID, func(id uint32) bool { return r.Files[id] != nil }); err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range b.all {
			if s.other >= 0 {
				unix.Close(s.other)
			}
			if err != nil && s.fd >= 0 {
				unix.Close(s.fd)
			}
			if err != nil {
				s.removeTemp()
			}
		}
	}()
	for _, step := range []func(*usk) error{b.make, b.bind, b.setOpts, b.listen, b.connect, b.refill, b.shutdown, b.unlinkDeleted} {
		for _, s := range b.all {
			if s.extern() || s.inherit {
				continue
			}
			if err := step(s); err != nil {
				return nil, fmt.Errorf("restore %s: %w", s, err)
			}
		}
	}
	fds = map[uint32]int{}
	for _, s := range b.all {
		if s.fd >= 0 {
			fds[s.ue.GetId()] = s.fd
		}
	}
	return fds, nil
}

// collect indexes the unix entries of files.img and checks what the
// restore relies on.
func (b *unixBuild) collect() error {
	for _, fe := range b.r.Files {
		ue := fe.GetUsk()
		if fe.GetType() != fdinfo.FdTypes_UNIXSK || ue == nil {
			continue
		}
		s := &usk{ue: ue, fd: -1, other: -1}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("files.img: unix socket entry id %d (socket:[%d]): %s: %w", ue.GetId(), ue.GetIno(), fmt.Sprintf(format, args...), images.ErrCorrupt)
		}
		switch ue.GetType() {
		case unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET:
		default:
			return bad("type %d", ue.GetType())
		}
		if len(ue.GetName()) > len(unix.RawSockaddrUnix{}.Path) {
			return bad("name of %d bytes", len(ue.GetName()))
		}
		if ue.GetId() != fe.GetId() {
			return bad("id %d in a file entry of id %d", ue.GetId(), fe.GetId())
		}
		if b.byIno[ue.GetIno()] != nil {
			return bad("inode twice")
		}
		moved, err := checkMovedFile(ue)
		if err != nil {
			return bad("%v", err)
		}
		s.moved = moved
		b.byIno[ue.GetIno()] = s
		b.byID[ue.GetId()] = s
		b.all = append(b.all, s)
	}
	slices.SortFunc(b.all, func(x, y *usk) int { return int(x.ue.GetId()) - int(y.ue.GetId()) })
	for _, s := range b.all {
		if p := s.ue.GetPeer(); p != 0 && b.byIno[p] == nil {
			return fmt.Errorf("files.img: %s is connected to socket:[%d], which is not in the dump: %w", s, p, images.ErrCorrupt)
		}
	}
	return nil
}

func (b *unixBuild) peer(s *usk) *usk { return b.byIno[s.ue.GetPeer()] }

// connected says a stream or seqpacket socket has a connection (it was
// not bound itself: it shares the name of its listener).
func connected(s *usk) bool {
	return s.ue.GetType() != unix.SOCK_DGRAM && s.ue.GetState() == linux.TCPEstablished
}

// make creates the socket: inherited (--inherit-fd fd[N]:socket:[INO]),
// one end of a pair, or alone.
func (b *unixBuild) make(s *usk) error {
	if s.fd >= 0 {
		return nil
	}
	typ := int(s.ue.GetType())
	if f, ok := b.r.Inherited(fmt.Sprintf("socket:[%d]", s.ue.GetIno())); ok {
		fd, err := unix.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			return os.NewSyscallError("dup", err)
		}
		unix.CloseOnExec(fd)
		unix.SetNonblock(fd, true)
		s.fd, s.inherit = fd, true
		return nil
	}
	p := b.peer(s)
	if p != nil && p.extern() && typ != unix.SOCK_DGRAM {
		return fmt.Errorf("its peer socket:[%d] (%s) was outside the tree: restore with --inherit-fd fd[N]:socket:[%d]",
			p.ue.GetIno(), unixName(p.ue.GetName()), s.ue.GetIno())
	}
	if p != nil && p.extern() && !b.r.Opts.ExtUnixSk {
		return fmt.Errorf("it was connected to socket:[%d] (%s) outside the tree: restore with -x/--ext-unix-sk to connect it to that name again",
			p.ue.GetIno(), unixName(p.ue.GetName()))
	}
	const flags = unix.SOCK_NONBLOCK | unix.SOCK_CLOEXEC
	switch {
	case p != nil && !p.extern() && p.ue.GetPeer() == s.ue.GetIno() && s.ue.GetPeer() == p.ue.GetIno() && p.fd < 0:
		if p.ue.GetType() != s.ue.GetType() {
			return fmt.Errorf("its peer %s is of another type: %w", p, images.ErrCorrupt)
		}
		sv, err := socketpair(b.r, unix.AF_UNIX, typ|flags, 0)
		if err != nil {
			return os.NewSyscallError("socketpair", err)
		}
		s.fd, p.fd = sv[0], sv[1]
		s.paired, p.paired = true, true
	case s.ue.GetPeer() == 0 && (connected(s) || typ == unix.SOCK_DGRAM && len(s.ue.GetName()) == 0 && len(s.packets) > 0):
		// Its peer is closed: a pair whose other end is closed once the
		// queue is refilled through it. So is an unnamed datagram socket
		// with messages queued: only a peer, now gone, could send them.
		sv, err := socketpair(b.r, unix.AF_UNIX, typ|flags, 0)
		if err != nil {
			return os.NewSyscallError("socketpair", err)
		}
		s.fd, s.other, s.paired = sv[0], sv[1], true
	default:
		fd, err := socket(b.r, unix.AF_UNIX, typ|flags, 0)
		if err != nil {
			return os.NewSyscallError("socket", err)
		}
		s.fd = fd
	}
	return nil
}

// bind binds a named socket again, removing the socket file a dead
// process left at its path first, as criu does.
func (b *unixBuild) bind(s *usk) error {
	name := s.ue.GetName()
	if len(name) == 0 || connected(s) {
		return nil
	}
	a := s.addr()
	abstract := name[0] == 0
	if !abstract && (s.ue.GetDeleted() || s.moved != "") {
		return b.bindAside(s, a, s.moved)
	}
	host := b.r.InRoot(a.Name) // the path of a container's socket in its mounts
	if !abstract {
		if err := files.CreateDirOK(host); errors.Is(err, images.ErrUnsafePath) {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(host, &st); err == nil {
			if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
				return fmt.Errorf("%s exists and is not a socket: remove it or move it away", a.Name)
			}
			if err := unix.Unlink(host); err != nil {
				return fmt.Errorf("remove the stale socket file %s: %w", a.Name, err)
			}
		}
	}
	if err := bindUnix(s, a, b.r.Root); err != nil {
		return fmt.Errorf("bind to %s: %w", unixName(name), err)
	}
	if abstract {
		return nil
	}
	return setUnixPerms(s, host)
}

// setUnixPerms gives the file of a socket just bound at path the mode
// and owner of the dump.
func setUnixPerms(s *usk, path string) error {
	fp := s.ue.GetFilePerms()
	if fp == nil {
		return nil
	}
	if err := unix.Chmod(path, fp.GetMode()&0o7777); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := unix.Lchown(path, int(fp.GetUid()), int(fp.GetGid())); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

func (b *unixBuild) setOpts(s *usk) error {
	if s.inherit {
		return nil
	}
	return applyUnixOpts(s.fd, s.ue.GetOpts())
}

func (b *unixBuild) listen(s *usk) error {
	if s.ue.GetState() != linux.TCPListen {
		return nil
	}
	if err := unix.Listen(s.fd, int(s.ue.GetBacklog())); err != nil {
		return fmt.Errorf("listen on %s: %w", unixName(s.ue.GetName()), os.NewSyscallError("listen", err))
	}
	return nil
}

// connect connects a socket to a named peer: a datagram socket to its
// receiver, a client waiting in a backlog to its listener, which puts it
// in the backlog again.
func (b *unixBuild) connect(s *usk) error {
	p := b.peer(s)
	if p == nil || s.paired || s.ue.GetState() == linux.TCPListen {
		return nil
	}
	if len(p.ue.GetName()) == 0 {
		return fmt.Errorf("its peer %s has no name to connect to", p)
	}
	a := p.addr()
	err := inRoot(b.r.Root, a.Name, "", func() error { return unix.Connect(s.fd, a) })
	if err != nil {
		return fmt.Errorf("connect to %s: %w", unixName(p.ue.GetName()), os.NewSyscallError("connect", err))
	}
	return nil
}

func (b *unixBuild) shutdown(s *usk) error {
	sh := s.ue.GetShutdown()
	if sh == sk_opts.SkShutdown_NONE || s.other >= 0 {
		return nil
	}
	if sh > sk_opts.SkShutdown_BOTH {
		return fmt.Errorf("shutdown state %d: %w", sh, images.ErrCorrupt)
	}
	// SHUT_RD, SHUT_WR, SHUT_RDWR are the SkShutdown values less one.
	if err := unix.Shutdown(s.fd, int(sh)-1); err != nil && err != unix.ENOTCONN {
		return fmt.Errorf("shutdown %v: %w", sh, os.NewSyscallError("shutdown", err))
	}
	return nil
}

// unlinkDeleted removes the file of a socket bound to a path that was
// unlinked before the dump (kept under a temporary name while peers
// connected to it), and the directories made to bind it.
func (b *unixBuild) unlinkDeleted(s *usk) error {
	return s.removeTemp()
}

func (s *usk) removeTemp() error {
	var errs []error
	if s.tmp != "" {
		if err := unix.Unlink(s.tmp); err != nil {
			errs = append(errs, fmt.Errorf("unlink %s, the file of a socket deleted before the dump: %w", s.tmp, os.NewSyscallError("unlink", err)))
		}
		s.tmp = ""
	}
	if s.aside != nil {
		errs = append(errs, s.aside.done())
		s.aside = nil
	}
	return errors.Join(errs...)
}

// applyUnixOpts gives a new socket the options of an entry. Buffer
// sizes are set with the *FORCE options (root) at half the dumped value:
// the kernel doubles what it is given.
func applyUnixOpts(fd int, o *sk_opts.SkOptsEntry) error {
	if o == nil {
		return nil
	}
	for _, b := range []struct {
		want          uint32
		get, set, alt int
		name          string
	}{
		{o.GetSoSndbuf(), unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, "SO_SNDBUF"},
		{o.GetSoRcvbuf(), unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, "SO_RCVBUF"},
	} {
		cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.get)
		if err != nil || b.want == 0 || uint32(cur) == b.want {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.set, int(b.want/2)); err != nil {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.alt, int(b.want/2)); err != nil {
				return fmt.Errorf("%s %d: %w", b.name, b.want, os.NewSyscallError("setsockopt", err))
			}
		}
	}
	for _, tm := range []struct {
		sec, usec uint64
		opt       int
		name      string
	}{
		{o.GetSoSndTmoSec(), o.GetSoSndTmoUsec(), unix.SO_SNDTIMEO, "SO_SNDTIMEO"},
		{o.GetSoRcvTmoSec(), o.GetSoRcvTmoUsec(), unix.SO_RCVTIMEO, "SO_RCVTIMEO"},
	} {
		if tm.sec == 0 && tm.usec == 0 {
			continue
		}
		tv := unix.Timeval{Sec: int64(tm.sec), Usec: int64(tm.usec)}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, tm.opt, &tv); err != nil {
			return fmt.Errorf("%s: %w", tm.name, os.NewSyscallError("setsockopt", err))
		}
	}
	for _, v := range []struct {
		val  int
		opt  int
		name string
	}{
		{b2i(o.GetSoPasscred()), unix.SO_PASSCRED, "SO_PASSCRED"},
		{b2i(o.GetSoPasssec()), unix.SO_PASSSEC, "SO_PASSSEC"},
		{int(o.GetSoPriority()), unix.SO_PRIORITY, "SO_PRIORITY"},
		{int(o.GetSoRcvlowat()), unix.SO_RCVLOWAT, "SO_RCVLOWAT"},
		{int(o.GetSoMark()), unix.SO_MARK, "SO_MARK"},
	} {
		if v.opt == unix.SO_RCVLOWAT && v.val <= 1 || v.val == 0 {
			continue // the defaults
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, v.opt, v.val); err != nil {
			return fmt.Errorf("%s %d: %w", v.name, v.val, os.NewSyscallError("setsockopt", err))
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// bindUnix binds s to a, its name joined to its directory. A relative
// name is bound as it was, from inside its directory, so that the
// program's getsockname gives it back as it gave it; a container's
// socket from inside its root (root: files.Restorer.Root).
func bindUnix(s *usk, a *unix.SockaddrUnix, root string) error {
	name, dir := s.ue.GetName(), s.ue.GetNameDir()
	if len(name) == 0 || name[0] == 0 || name[0] == '/' || dir == "" {
		return os.NewSyscallError("bind", inRoot(root, a.Name, "", func() error { return unix.Bind(s.fd, a) }))
	}
	return inRoot(root, unixPath(name), dir, func() error {
		return os.NewSyscallError("bind", unix.Bind(s.fd, &unix.SockaddrUnix{Name: unixPath(name)}))
	})
}

// inRoot runs fn, which names path (abstract or not), from directory dir
// ("": as is) under root (a restored container's, "": stasis'): on a
// thread of its own with a root and working directory of its own
// (CLONE_FS unshared), as stasis' other threads must keep theirs. The
// thread ends with the goroutine, locked.
func inRoot(root, path, dir string, fn func() error) error {
	if (root == "" || path == "" || path[0] == 0) && dir == "" {
		return fn()
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread's root and cwd are not stasis' any more
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			done <- os.NewSyscallError("unshare CLONE_FS", err)
			return
		}
		if root != "" {
			// Back to stasis' root after fn: a main thread Go keeps
			// wedged must not hold the container's.
			own, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				done <- os.NewSyscallError("open /", err)
				return
			}
			defer func() {
				if unix.Fchdir(own) == nil {
					_ = unix.Chroot(".")
				}
				unix.Close(own)
			}()
			if err := unix.Chroot(root); err != nil {
				done <- fmt.Errorf("root %s of the container: %w", root, os.NewSyscallError("chroot", err))
				return
			}
			if err := unix.Chdir("/"); err != nil {
				done <- os.NewSyscallError("chdir", err)
				return
			}
		}
		if dir != "" {
			if err := unix.Chdir(dir); err != nil {
				done <- fmt.Errorf("directory %s of the relative name: %w", dir, os.NewSyscallError("chdir", err))
				return
			}
		}
		done <- fn()
	}()
	return <-done
}
