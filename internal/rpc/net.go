package rpc

import (
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/netns"
)

// The criu_opts of a tree's network namespace (internal/netns): empty_ns
// (CLONE_NEWNET only, as criu), veths, join_ns net, weak_sysctls, and
// at restore the external veth[IFNAME]:OUT entries. runc passes
// external net[INO]:extRootNetNS at dump (Files.External) and the
// namespace as inherit_fd extRootNetNS at restore.

func netDumpOptions(o *rpc.CriuOpts) netns.Options {
	return netns.Options{Empty: o.GetEmptyNs()&unix.CLONE_NEWNET != 0}
}

func netRestoreOptions(o *rpc.CriuOpts) (netns.Options, error) {
	n := netDumpOptions(o)
	n.WeakSysctls = o.GetWeakSysctls()
	n.External = o.GetExternal()
	for _, v := range o.GetVeths() {
		n.VethPairs = append(n.VethPairs, v.GetIfIn()+"="+v.GetIfOut())
	}
	for _, j := range o.GetJoinNs() {
		if j.GetNs() != "net" {
			return n, fmt.Errorf("rpc: join_ns %s: joining %s namespaces is %w (net only)", j.GetNs(), j.GetNs(), ErrNotImplemented)
		}
		n.Join = j.GetNsFile()
	}
	return n, nil
}
