// Package netns owns the network namespace of a dumped tree, both
// directions, in criu 4.2's images.
//
//   - netns.go: Dump (netns-ID.img, netdev-ID.img and the rest, or only
//     the key of a namespace --external names) and the Restorer: Load
//     reads and checks the images and the options before anything is
//     made (a veth whose outside end has no name, an external namespace
//     without its --inherit-fd are refused naming the key), Fill makes
//     the contents of the namespace the restored root has just created.
//   - options.go: criu's flags: --veth-pair, --external veth[]/net[],
//     --join-ns net:, --empty-ns net, --weak-sysctls.
//   - links.go (dump), links_restore.go: lo, veth (both ends inside, or
//     the outside end in stasis' namespace, optionally in a bridge),
//     bridge, macvlan, tun/tap; index, name, mtu, address, flags, master.
//   - sysctl.go: net.ipv4/ipv6 conf (all, default, per link), unix and
//     ipv4 sysctls in criu's order (the image keeps them by position).
//   - routes.go, rtnl.go, attrs.go: addresses, routes and rules as
//     iproute2's save files (criu runs `ip ... save`), made and replayed
//     over rtnetlink by stasis itself; raw netlink helpers.
//   - nft.go: the nftables ruleset.
//
// All work inside a namespace runs on a thread that joins it for the
// time of the work and dies after (linux.InNamespace): netlink sockets
// and /proc/sys/net belong to the namespace of the thread that opens
// them. The tree's own sockets are made in its namespace by
// internal/sockets (files.Restorer.InNetNS), and the network lock is
// taken there (netlock.Lock.SetNetNS); internal/ns hooks this package
// into the tree's namespaces.
package netns
