package kerndat

import (
	"golang.org/x/sys/unix"
)

// Namespace features of criu 4.2's `check --feature` that stasis uses
// now that it restores mount, user and network namespaces: each is
// probed here (criu_features.go registers them).
var nsProbes = map[string]func() (bool, string){
	// --external net[INO]:KEY and --inherit-fd fd[N]:KEY (internal/netns):
	// the tree joins a namespace given by fd.
	"external_net_ns": probeNsFile("net"),
	// A user namespace is dumped and made again (internal/ns).
	"userns": probeNsFile("user"),
	// The sockets of a tree's own network namespace are listed from it,
	// found with SIOCGSKNS (internal/sockets).
	"sk_ns": probeSkNS,
	// stasis restores a mount's peer group by binding from a peer of it;
	// criu gates its MOVE_MOUNT_SET_GROUP restore (and scripts their
	// --mntns-compat-mode) on this name: the kernel's answer.
	"move_mount_set_group": since("MOVE_MOUNT_SET_GROUP", 5, 15),
	// Network devices are made again with their index (internal/netns),
	// which criu does with IFLA_NEW_IFINDEX: the kernel's answer.
	"newifindex": since("IFLA_NEW_IFINDEX", 4, 15),
}

func init() {
	for name, fn := range nsProbes {
		criuFeatures[name] = fn
	}
}

// probeNsFile says whether this process' namespace of kind can be
// opened and set, as the restore does with the tree's.
func probeNsFile(kind string) func() (bool, string) {
	return func() (bool, string) {
		fd, err := unix.Open("/proc/self/ns/"+kind, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return errDetail("/proc/self/ns/"+kind, err)
		}
		unix.Close(fd)
		return true, "/proc/self/ns/" + kind
	}
}

func probeSkNS() (bool, string) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errDetail("SIOCGSKNS: socket", err)
	}
	defer unix.Close(fd)
	ns, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		return errDetail("SIOCGSKNS", err)
	}
	unix.Close(ns)
	return true, "SIOCGSKNS"
}
