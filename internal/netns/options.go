package netns

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Options are criu's options about the network namespace of a tree.
type Options struct {
	// External (--external): net[INO]:KEY at dump, the network namespace
	// of inode INO belongs to the caller (a runtime's): only KEY is
	// written, and the restore joins the namespace given as --inherit-fd
	// fd[N]:KEY. veth[IFNAME]:OUTNAME[@BRIDGE] at restore: the veth
	// IFNAME of the tree gets its outside end OUTNAME in stasis' network
	// namespace, enslaved to BRIDGE.
	External []string
	// VethPairs (--veth-pair IN=OUT[@BRIDGE]) at restore: as
	// veth[IN]:OUT[@BRIDGE].
	VethPairs []string
	// Join (--join-ns net:PATH or net:PID) at restore: the tree joins
	// that namespace instead of getting one of its own.
	Join string
	// Empty (--empty-ns net): the runtime sets the network up itself;
	// the dump writes no links, addresses, routes or rules, and the
	// restore makes an empty namespace.
	Empty bool
	// WeakSysctls (--weak-sysctls): a sysctl that cannot be written is
	// skipped.
	WeakSysctls bool
	// Inherit are the --inherit-fd fds by key (restore).
	Inherit map[string]int
}

var (
	extNetArg  = regexp.MustCompile(`^net\[([0-9]+)\]:(.+)$`)
	extVethArg = regexp.MustCompile(`^veth\[([^\]]+)\]:([^@]+)(?:@(.+))?$`)
	vethPair   = regexp.MustCompile(`^([^=]+)=([^@]+)(?:@(.+))?$`)
)

// IsExternal tells whether an --external value is one of this package's.
func IsExternal(s string) bool { return extNetArg.MatchString(s) || extVethArg.MatchString(s) }

// externalKey returns the key --external net[INO]:KEY gives namespace ino.
func (o Options) externalKey(ino uint64) string {
	for _, e := range o.External {
		if m := extNetArg.FindStringSubmatch(e); m != nil && m[1] == strconv.FormatUint(ino, 10) {
			return m[2]
		}
	}
	return ""
}

// veths are the outside ends of veths the options name, by inside name.
func (o Options) veths() (map[string]vethOut, error) {
	out := map[string]vethOut{}
	for _, e := range o.External {
		if m := extVethArg.FindStringSubmatch(e); m != nil {
			out[m[1]] = vethOut{name: m[2], bridge: m[3]}
		}
	}
	for _, p := range o.VethPairs {
		m := vethPair.FindStringSubmatch(p)
		if m == nil {
			return nil, fmt.Errorf("--veth-pair %q: want IN=OUT or IN=OUT@BRIDGE", p)
		}
		out[m[1]] = vethOut{name: m[2], bridge: m[3]}
	}
	for in, v := range out {
		if len(v.name) >= 16 || len(in) >= 16 {
			return nil, fmt.Errorf("veth %s=%s: a link name has at most 15 bytes", in, v.name)
		}
	}
	return out, nil
}

// joinPath is the namespace file of --join-ns net:PATH|PID, "" without.
func (o Options) joinPath() (string, error) {
	if o.Join == "" {
		return "", nil
	}
	path, _, _ := strings.Cut(o.Join, ",")
	if _, err := strconv.Atoi(path); err == nil {
		return "/proc/" + path + "/ns/net", nil
	}
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("--join-ns net:%s: want net:PID or net:/absolute/path", path)
	}
	return path, nil
}
