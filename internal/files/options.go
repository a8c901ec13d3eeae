package files

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strconv"
)

// DumpOptions are criu's options about the files of a dump.
type DumpOptions struct {
	// GhostLimit is the largest unlinked-but-open file whose content is
	// copied into the images (--ghost-limit); 0 means DefaultGhostLimit.
	GhostLimit int64
	// LinkRemap: an unlinked file is linked again under a new name
	// instead of being copied (--link-remap).
	LinkRemap bool
	// EvasiveDevices accepts a device opened by a path that now names
	// another node of the same device (--evasive-devices).
	EvasiveDevices bool
	// FileLocks dumps file locks (-l/--file-locks); without it a locked
	// file is an error.
	FileLocks bool
	// ExtUnixSk accepts unix sockets connected to a peer outside the
	// tree (-x/--ext-unix-sk); criu takes only datagram ones.
	ExtUnixSk bool
	// TCPEstablished dumps established TCP connections with TCP_REPAIR
	// (--tcp-established); without it they are an error.
	TCPEstablished bool
	// SkipInFlight skips TCP connections not yet accepted (criu's
	// --skip-in-flight).
	SkipInFlight bool
	// TCPClose records established TCP connections without their state
	// (no repair mode, no network lock), to be restored closed (criu's
	// --tcp-close at dump; inventory's tcp_close tells the restore).
	TCPClose bool
	// OnConnection, if set, is called with each established TCP
	// connection before its state is read: the network lock drops its
	// packets from then on, so that nothing changes under the dump.
	OnConnection func(Conn) error
	// External lists objects outside the tree the dump must accept
	// (--external), e.g. "pipe:[1234]": a pipe whose other end is not in
	// the tree. The restore gets it back with --inherit-fd.
	External []string
	// ShellJob accepts a terminal whose master is outside the tree (the
	// one a shell job was started from; -j/--shell-job).
	ShellJob bool
	// OrphanPtsMaster accepts it too (the RPC's orphan_pts_master: a
	// container's console, whose master the runtime holds).
	OrphanPtsMaster bool
	// Preflight only checks (stasis check --pid): each refusal is kept in
	// Table.Refused and the dump goes on to the next resource, and nothing
	// outside stasis is changed (no repair mode, no --link-remap link).
	Preflight bool
}

// externalKinds are the --external objects stasis knows, by prefix.
var externalKinds = []*regexp.Regexp{
	regexp.MustCompile(`^pipe:\[[0-9]+\]$`),
	regexp.MustCompile(`^unix\[[0-9]+\]$`),             // a unix socket of the tree by inode, whose peer is outside
	regexp.MustCompile(`^tty\[[0-9a-f]+:[0-9a-f]+\]$`), // a terminal by device numbers (ExternalTtyKey)
	regexp.MustCompile(`^mnt\[[^]]+\]:.+$`),            // a mount bound from outside the container (internal/mount)
	regexp.MustCompile(`^net\[[0-9]+\]:.+$`),           // a network namespace by inode, and its key (internal/netns)
	regexp.MustCompile(`^pid\[[0-9]+\]:.+$`),           // a pid namespace by inode whose init is not dumped, and its key (internal/ns)
}

// Check refuses options the dump cannot honour, before anything is
// frozen.
func (o DumpOptions) Check() error {
	for _, e := range o.External {
		known := false
		for _, re := range externalKinds {
			known = known || re.MatchString(e)
		}
		if !known {
			return fmt.Errorf("--external %s: stasis takes pipe:[INO] (the link of a pipe fd), unix[INO] (a unix socket's inode), tty[RDEV:DEV] (a terminal's device numbers, hex), net[INO]:KEY (a network namespace), pid[INO]:KEY (a pid namespace whose init is not dumped) and mnt[MOUNTPOINT]:KEY (a mount bound from outside the container) only so far", e)
		}
	}
	if o.GhostLimit < 0 {
		return fmt.Errorf("--ghost-limit %d: must not be negative", o.GhostLimit)
	}
	return nil
}

// DefaultGhostLimit is larger than criu's 1 MiB: real programs keep
// unlinked temporary files of a few MiB open (compilers, databases).
const DefaultGhostLimit = 64 << 20

// RestoreOptions are criu's options about the files of a restore.
type RestoreOptions struct {
	// InheritFds are files of stasis that take the place of the dumped
	// objects they are keyed by (--inherit-fd fd[N]:KEY, KEY as
	// "pipe:[1234]", the link target of the dumped fd).
	InheritFds []InheritFd
	// TCPEstablished restores established TCP connections
	// (--tcp-established); TCPClose restores them closed (--tcp-close).
	TCPEstablished, TCPClose bool
	// ExtUnixSk: unix sockets whose peer was outside the tree
	// (-x/--ext-unix-sk) are connected again to that peer's address.
	ExtUnixSk bool
	// FileLocks restores file locks (-l/--file-locks).
	FileLocks bool
	// FileValidation is how a reopened file is checked to be the dumped
	// one (--file-validation): "filesize" (the default) or "buildid".
	FileValidation string
	// ShellJob gives the terminal of stasis to a pty slave whose master
	// was outside the tree (-j/--shell-job).
	ShellJob bool
	// OrphanPtsMaster, if set, gives such a slave a new pty pair of its
	// index instead, and is called with the new master, which the caller
	// takes a copy of (the RPC's orphan_pts_master: internal/tty/orphan.go).
	OrphanPtsMaster func(master *os.File) error
	// Log takes the messages of the restore's steps; nil discards them.
	Log *slog.Logger
}

// Conn is one TCP connection of the tree, as the network lock needs it.
type Conn struct {
	Local, Remote netip.AddrPort
}

// InheritFd is one --inherit-fd: stasis' fd Fd stands for the object Key.
type InheritFd struct {
	Key string
	Fd  int
}

var inheritFdArg = regexp.MustCompile(`^fd\[([0-9]+)\]:(.+)$`)

// ParseInheritFd parses criu's --inherit-fd fd[N]:KEY and checks that
// fd N is open in stasis.
func ParseInheritFd(s string) (InheritFd, error) {
	m := inheritFdArg.FindStringSubmatch(s)
	if m == nil {
		return InheritFd{}, fmt.Errorf("--inherit-fd %q: want fd[N]:KEY, e.g. fd[3]:pipe:[1234]", s)
	}
	fd, err := strconv.Atoi(m[1])
	if err != nil {
		return InheritFd{}, fmt.Errorf("--inherit-fd %q: %w", s, err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/self/fd/%d", fd)); err != nil {
		return InheritFd{}, fmt.Errorf("--inherit-fd %q: fd %d is not open in stasis", s, fd)
	}
	return InheritFd{Key: m[2], Fd: fd}, nil
}
