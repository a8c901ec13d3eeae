package ns

import (
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/netns"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// The network namespace is internal/netns's; here it is hooked into the
// tree's namespaces: its id, the root's clone flag, its filling once the
// root made it.

const kNet = 1

// dumpNet writes the images of the root's network namespace.
func (d *Dumper) dumpNet() error {
	if d.rootIn[kNet] == d.self[kNet] {
		return nil
	}
	return netns.Dump(d.dir, d.root, d.ids.id(kNet, d.rootIn[kNet]), d.Net, d.log())
}

// NetPid is the host pid whose network namespace the tree's sockets are
// in, when it is not stasis' own (0): the dumped root. Check has seen
// the root.
func (d *Dumper) NetPid() int {
	if d.root == 0 || d.rootIn[kNet] == d.self[kNet] {
		return 0
	}
	return d.root
}

func (d *Dumper) log() *slog.Logger {
	if d.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return d.Log
}

// LoadNet reads the images of the root's network namespace and checks the
// options that restore it (--veth-pair, --external veth[]/net[],
// --join-ns net:, --empty-ns net) before anything is created. A joined
// namespace replaces the root's CLONE_NEWNET.
func (r *Restorer) LoadNet(opts netns.Options, log *slog.Logger) error {
	var err error
	if r.net, err = netns.Load(r.dir, r.netID, opts, log); err != nil {
		return err
	}
	if r.net.Joined() != nil {
		r.root.flags &^= unix.CLONE_NEWNET
	}
	return nil
}

// JoinNet puts task t (the puppet the root is cloned from) into the
// network namespace the tree joins, if any; channelFd is stasis' pidfd
// in t, to pass the namespace file through.
func (r *Restorer) JoinNet(t *ptrace.Task, channelFd int) error {
	f := r.net.Joined()
	if f == nil {
		return nil
	}
	fd, err := t.Call("pidfd_getfd", unix.SYS_PIDFD_GETFD, uint64(channelFd), uint64(f.Fd()), 0)
	if err != nil {
		return fmt.Errorf("join network namespace %s: %w", f.Name(), err)
	}
	_, err = t.Call("setns", unix.SYS_SETNS, fd, unix.CLONE_NEWNET)
	if _, cerr := t.Call("close", unix.SYS_CLOSE, fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("join network namespace %s: %w", f.Name(), err)
	}
	return nil
}

// NetPid is the host pid whose network namespace the tree's sockets must
// be made in, 0 for stasis' own: the root, once it made or joined one.
func (r *Restorer) NetPid() int {
	if r.net == nil {
		return 0
	}
	return r.rootHost
}

// HasNet tells whether the tree's sockets are in a network namespace
// other than stasis': one the root makes or joins.
func (r *Restorer) HasNet() bool { return r.net != nil }

// CloseNet releases what LoadNet opened.
func (r *Restorer) CloseNet() { r.net.Close() }
