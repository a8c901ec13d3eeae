package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/netdev"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/sysctl"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

func netnsName(id uint32) string  { return fmt.Sprintf("netns-%d.img", id) }
func netdevName(id uint32) string { return fmt.Sprintf("netdev-%d.img", id) }

// Dump writes the images of the network namespace of process pid, whose
// criu id is id: netns-ID.img (its sysctls), netdev-ID.img (its links),
// the address, route and rule images and nftables-ID.img. A namespace
// --external names gets its key only; --empty-ns net keeps its sysctls
// only. Nothing in the namespace is changed.
func Dump(dir *images.Dir, pid int, id uint32, opts Options, log *slog.Logger) error {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return fmt.Errorf("network namespace of pid %d: %w", pid, os.NewSyscallError("stat", err))
	}
	if key := opts.externalKey(st.Ino); key != "" {
		return dir.Write(netnsName(id), &netdev.NetnsEntry{ExtKey: proto.String(key)})
	}
	err := linux.InNamespace(pid, unix.CLONE_NEWNET, func() error {
		e := &netdev.NetnsEntry{}
		readNSConfs(nsConfs{&e.DefConf4, &e.AllConf4, &e.DefConf6, &e.AllConf6, &e.UnixConf, &e.Ipv4Sysctl})
		var devs []proto.Message
		if !opts.Empty {
			nl, err := openRtnl()
			if err != nil {
				return err
			}
			defer nl.close()
			links, err := listLinks(nl)
			if err != nil {
				return err
			}
			for _, l := range links {
				d, err := netdevEntry(l, id)
				if err != nil {
					return err
				}
				d.Conf4 = readConfs("ipv4/conf/"+l.name, devconfs4)
				if ipv6() {
					d.Conf6 = readConfs("ipv6/conf/"+l.name, devconfs6)
				}
				devs = append(devs, d)
			}
			if err := dumpSaved(dir, id); err != nil {
				return err
			}
			if err := dumpNftables(dir, id); err != nil {
				return err
			}
		}
		if err := dir.Write(netdevName(id), devs...); err != nil {
			return err
		}
		return dir.Write(netnsName(id), e)
	})
	if err != nil {
		return fmt.Errorf("dump the network namespace of pid %d: %w", pid, err)
	}
	log.Debug("network namespace dumped", "pid", pid, "id", id, "empty", opts.Empty)
	return nil
}

// Check refuses, before anything is dumped, what Dump of the network
// namespace of process pid would refuse: a link of a kind stasis does
// not restore, an nftables object or rule it cannot print.
func Check(pid int, opts Options) error {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return fmt.Errorf("network namespace of pid %d: %w", pid, os.NewSyscallError("stat", err))
	}
	if opts.Empty || opts.externalKey(st.Ino) != "" {
		return nil
	}
	err := linux.InNamespace(pid, unix.CLONE_NEWNET, func() error {
		nl, err := openRtnl()
		if err != nil {
			return err
		}
		defer nl.close()
		links, err := listLinks(nl)
		if err != nil {
			return err
		}
		for _, l := range links {
			if _, err := netdevEntry(l, 0); err != nil {
				return err
			}
		}
		nft, err := nftables.New()
		if err != nil {
			return fmt.Errorf("nftables: %w", err)
		}
		_, err = printRuleset(nft)
		return err
	})
	if err != nil {
		return fmt.Errorf("network namespace of pid %d: %w", pid, err)
	}
	return nil
}

// Restorer restores the network namespace of a tree: the one the root
// creates, filled from the images before any task runs, or one it joins.
type Restorer struct {
	dir   *images.Dir
	id    uint32 // 0: the images' tree was in the dumping tool's namespace
	opts  Options
	ns    *netdev.NetnsEntry
	links []*netdev.NetDeviceEntry
	saved map[string]*saveFile
	nft   *ruleset
	outs  map[string]vethOut
	// join is the namespace the root joins (--join-ns, an external
	// key), nil when it makes its own.
	join *os.File
	log  *slog.Logger
}

// Load reads and checks the images of network namespace id (0 when the
// tree did not have one of its own) and the options, before anything is
// created: a veth whose outside end has no name, an external namespace
// whose key has no --inherit-fd, a bridge that does not exist are
// refused here, naming the key.
func Load(dir *images.Dir, id uint32, opts Options, log *slog.Logger) (*Restorer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Restorer{dir: dir, id: id, opts: opts, log: log}
	jp, err := opts.joinPath()
	if err != nil {
		return nil, err
	}
	if id == 0 && jp == "" {
		return nil, nil
	}
	if id != 0 {
		r.ns = &netdev.NetnsEntry{}
		if err := dir.ReadOne(netnsName(id), r.ns); err != nil {
			// criu writes no image of a namespace --empty-ns net leaves
			// to the runtime (a podman container's): nothing to fill.
			if !opts.Empty || !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			r.ns = nil
		}
	}
	if key := r.ns.GetExtKey(); key != "" && jp == "" {
		fd, ok := opts.Inherit[key]
		if !ok {
			return nil, fmt.Errorf("restore: the network namespace of the images is external, key %q: give it with --inherit-fd fd[N]:%s or --join-ns net:PATH: %w", key, key, ErrMissingKey)
		}
		r.join = os.NewFile(uintptr(fd), key)
		if err := checkNetNS(r.join, key); err != nil {
			return nil, err
		}
		return r, nil
	}
	if jp != "" {
		if r.join, err = os.Open(jp); err != nil {
			return nil, fmt.Errorf("restore: --join-ns net:%s: %w", opts.Join, err)
		}
		if err := checkNetNS(r.join, "--join-ns net:"+opts.Join); err != nil {
			r.join.Close()
			return nil, err
		}
		return r, nil
	}
	if opts.Empty {
		return r, nil
	}
	if r.links, err = images.ReadAll(dir, netdevName(id), func() *netdev.NetDeviceEntry { return &netdev.NetDeviceEntry{} }); err != nil {
		return nil, err
	}
	if r.saved, err = readSaved(dir, id); err != nil {
		return nil, err
	}
	if r.nft, err = readNftables(dir, id); err != nil {
		return nil, err
	}
	if r.outs, err = opts.veths(); err != nil {
		return nil, err
	}
	return r, r.checkLinks()
}

// checkLinks refuses, before anything is made, a link the restore could
// not make: an unknown kind, a veth whose outside end has no name or
// whose name or bridge does not fit stasis' namespace.
func (r *Restorer) checkLinks() error {
	names := map[string]bool{}
	if ifs, err := netInterfaces(); err == nil {
		for _, n := range ifs {
			names[n] = true
		}
	}
	for _, e := range r.links {
		switch e.GetType() {
		case netdev.NdType_LOOPBACK, netdev.NdType_BRIDGE, netdev.NdType_MACVLAN, netdev.NdType_TUN:
		case netdev.NdType_VETH:
			if insidePeer(e, r.id) {
				continue
			}
			out, ok := r.outs[e.GetName()]
			if !ok {
				return fmt.Errorf("restore: veth %s of the images has its peer outside the tree: give its outside name with --veth-pair %s=NAME[@BRIDGE] or --external veth[%s]:NAME[@BRIDGE]: %w",
					e.GetName(), e.GetName(), e.GetName(), ErrMissingKey)
			}
			if names[out.name] {
				return fmt.Errorf("restore: veth %s: its outside name %s is taken by a link of stasis' network namespace", e.GetName(), out.name)
			}
			if out.bridge != "" && !names[out.bridge] {
				return fmt.Errorf("restore: veth %s: bridge %s for its outside end %s does not exist: %w", e.GetName(), out.bridge, out.name, ErrMissingKey)
			}
		default:
			return fmt.Errorf("restore: link %s (index %d) is of type %s: restoring it is %w", e.GetName(), e.GetIfindex(), e.GetType(), ErrNotSupported)
		}
	}
	return nil
}

func netInterfaces() ([]string, error) {
	nl, err := openRtnl()
	if err != nil {
		return nil, err
	}
	defer nl.close()
	links, err := listLinks(nl)
	var out []string
	for _, l := range links {
		out = append(out, l.name)
	}
	return out, err
}

func checkNetNS(f *os.File, what string) error {
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("restore: %s: %w", what, err)
	}
	if st.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("restore: %s: not a namespace file", what)
	}
	return nil
}

// New tells whether the root creates the namespace (CLONE_NEWNET); if
// not, it joins Joined().
func (r *Restorer) New() bool { return r != nil && r.join == nil }

// Joined is the namespace the root joins, nil when it creates one.
func (r *Restorer) Joined() *os.File {
	if r == nil {
		return nil
	}
	return r.join
}

// Fill makes the contents of the namespace the root (host pid pid) has
// just created: links, sysctls, addresses, routes, rules and the
// nftables ruleset, from a thread that joins it. The outside ends of
// veths are made in stasis' namespace; they go with the namespace when
// a failed restore kills the tree.
func (r *Restorer) Fill(pid int) error {
	if !r.New() || r.ns == nil {
		return nil
	}
	// thread-self: the main thread may have been left in another
	// namespace by a locked goroutine that ended on it (Go keeps it).
	host, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return err
	}
	defer host.Close()
	err = linux.InNamespace(pid, unix.CLONE_NEWNET, func() error {
		nl, err := openRtnl()
		if err != nil {
			return err
		}
		defer nl.close()
		if err := createLinks(nl, r.links, r.id, r.outs, host); err != nil {
			return err
		}
		weak := r.opts.WeakSysctls
		for _, c := range []struct {
			base      string
			names     []string
			conf, def []*sysctl.SysctlEntry
		}{
			{"ipv4/conf/all", devconfs4, r.ns.AllConf4, nil},
			{"ipv4/conf/default", devconfs4, r.ns.DefConf4, nil},
			{"ipv6/conf/all", devconfs6, r.ns.AllConf6, nil},
			{"ipv6/conf/default", devconfs6, r.ns.DefConf6, nil},
			{"unix", unixConf, r.ns.UnixConf, nil},
			{"ipv4", ipv4Sysctls, r.ns.Ipv4Sysctl, nil},
		} {
			if err := writeConfs(c.base, c.names, c.conf, c.def, weak); err != nil {
				return err
			}
		}
		for _, e := range r.links {
			if err := writeConfs("ipv4/conf/"+e.GetName(), devconfs4, e.Conf4, r.ns.DefConf4, weak); err != nil {
				return err
			}
			if err := writeConfs("ipv6/conf/"+e.GetName(), devconfs6, e.Conf6, r.ns.DefConf6, weak); err != nil {
				return err
			}
		}
		if err := setLinks(nl, r.links); err != nil {
			return err
		}
		if err := restoreSaved(r.saved, r.id); err != nil {
			return err
		}
		return restoreNftables(r.nft, r.id)
	})
	if err == nil && len(r.outs) > 0 {
		err = func() error {
			nl, err := openRtnl()
			if err != nil {
				return err
			}
			defer nl.close()
			return setOutside(nl, r.outs)
		}()
	}
	if err != nil {
		return fmt.Errorf("restore network namespace %d in pid %d: %w", r.id, pid, err)
	}
	r.log.Debug("network namespace restored", "id", r.id, "pid", pid, "links", len(r.links))
	return nil
}

// Close releases the namespace file of --join-ns.
func (r *Restorer) Close() {
	if r != nil && r.join != nil && r.opts.Join != "" {
		r.join.Close()
	}
}
