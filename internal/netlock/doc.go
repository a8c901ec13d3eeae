// Package netlock is the network lock of a dump and a restore: while a
// tree with TCP connections is frozen, and until it runs again (here or
// on another host), the packets of its connections are dropped, so that
// the peers retransmit instead of getting a reset from a socket that is
// gone, and nothing arriving is acknowledged while the dump reads the
// queues. criu's --network-lock (criu/netfilter.c), with nftables only,
// through netlink (no nft or iptables binary).
//
// The lock of a dump is the table "inet CRIU-RUNID", named after the
// dump's run id as criu names its own (RUNID is "stasis-PID-RANDOM" for
// the tree whose root is PID; images of earlier stasis used "stasis-PID"):
// two sets of connections (IPv4 and IPv6; local address . port . remote
// address . port) and two base chains that drop the matching packets,
// one at prerouting and one at output, both at priority -350: after
// defragmentation (-400), so that every packet has its TCP header, and
// before conntrack (-200) and any filter, so that no other rule sees
// them.
//
// Lifetime. While a dump or restore runs, its lock is a table owned by
// the netlink socket of stasis (NFT_TABLE_F_OWNER, "stasis-PID-by-SELF"):
// the kernel removes it when stasis exits, even killed, so a stasis
// killed mid-dump leaves no lock behind while the tree goes on. Once the
// images are complete and the tree is killed (or left stopped), Persist
// replaces it atomically by the persistent table "CRIU-RUNID", which
// outlives stasis until the restore removes it (Unlock) once the
// restored sockets have left repair mode. The restore locks the same
// connections again, read from the images, with a table of its own
// while it runs: on another host, the peer's retransmissions meet no
// socket there before the restored one exists.
//
// A Lock is used by one goroutine at a time.
package netlock
