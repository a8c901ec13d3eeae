package main

import (
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/stasis-cr/stasis"
)

// netFlags are criu's flags about the tree's network namespace.
type netFlags struct {
	emptyNS  []string
	joinNS   []string
	external []string
	mnt      []string // --external mnt[KEY]:PATH, the mounts' (mounts.go)
	// plain are --external KEY:VALUE entries with a bare key (no
	// [...]), as LXC passes "console:" for a container without a
	// console: criu keeps them for an image object naming KEY and
	// ignores them otherwise; no stasis image object is keyed that way.
	plain []string
}

func (n *netFlags) registerDump(f *pflag.FlagSet) {
	f.StringArrayVar(&n.emptyNS, "empty-ns", nil, "net: dump no links, addresses, routes or rules of the tree's network namespace (the runtime sets them up)")
}

func (n *netFlags) registerRestore(f *pflag.FlagSet, o *stasis.NetOptions) {
	f.StringArrayVar(&n.emptyNS, "empty-ns", nil, "net: restore an empty network namespace (the runtime sets it up)")
	f.StringArrayVarP(&n.joinNS, "join-ns", "J", nil, "net:PATH or net:PID: the tree joins that network namespace")
	f.StringArrayVar(&o.VethPairs, "veth-pair", nil, "IN=OUT[@BRIDGE]: the veth IN of the tree gets its outside end OUT (in BRIDGE)")
	f.StringArrayVar(&n.external, "external", nil, "veth[IFNAME]:OUT[@BRIDGE] (a veth's outside end), mnt[KEY]:PATH (the source of an external mount) (repeatable)")
	f.BoolVar(&o.WeakSysctls, "weak-sysctls", false, "skip the sysctls that cannot be written")
}

// empty applies --empty-ns: criu takes a comma-separated list of kinds
// (only net).
func (n *netFlags) empty(o *stasis.NetOptions) error {
	for _, v := range n.emptyNS {
		for _, k := range strings.Split(v, ",") {
			if k != "net" {
				return fmt.Errorf("--empty-ns %s: only net is supported (as in criu)", k)
			}
			o.Empty = true
		}
	}
	return nil
}

func (n *netFlags) applyRestore(o *stasis.NetOptions) error {
	if err := n.empty(o); err != nil {
		return err
	}
	for _, j := range n.joinNS {
		kind, path, ok := strings.Cut(j, ":")
		if !ok || path == "" {
			return fmt.Errorf("--join-ns %q: want NS:PATH or NS:PID", j)
		}
		if kind != "net" {
			return fmt.Errorf("--join-ns %s: joining %s namespaces is %w yet (net only)", j, kind, stasis.ErrNotSupported)
		}
		o.Join = path
	}
	for _, e := range n.external {
		if strings.HasPrefix(e, "mnt[") {
			n.mnt = append(n.mnt, e)
			continue
		}
		if key, _, ok := strings.Cut(e, ":"); ok && key != "" && !strings.ContainsAny(key, "[]") {
			n.plain = append(n.plain, e)
			continue
		}
		if !strings.HasPrefix(e, "veth[") || !stasis.IsNetExternal(e) {
			return fmt.Errorf("--external %s: restore takes veth[IFNAME]:OUT[@BRIDGE] and mnt[KEY]:PATH only so far (an external network namespace comes with --inherit-fd fd[N]:KEY)", e)
		}
		o.External = append(o.External, e)
	}
	return nil
}
