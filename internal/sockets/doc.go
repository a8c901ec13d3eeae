// Package sockets owns the socket kinds of open files, both directions
// (dump into files.img and its socket images, open again at restore) and
// what each needs around them. It registers its kinds with the registry
// of package files from its init, as a database/sql driver does: the
// orchestrators import it for that alone.
//
// Where its parts are:
//   - socket.go: the one kind of every socket:[INO] fd, which hands it to
//     its address family's dumper; sockfilter.go: classic BPF filters,
//     kept for every family.
//   - unixsk.go, unixqueue.go, inflight.go, sockdiag.go: unix sockets,
//     their queued messages (sk-queues.img), the files in flight in them
//     (SCM_RIGHTS) and the peers and backlogs sock_diag tells.
//   - inetsk.go: IPv4 and IPv6 sockets; tcp.go the TCP stream with
//     TCP_REPAIR (tcp-stream-N.img), tcpfin.go the peer's FIN of a
//     half-closed connection, tcpsyn.go a connection still connecting;
//     mptcp.go MPTCP sockets (listening ones, as TCP's; connections
//     refused); rawsk.go raw IP sockets. ICMP datagram (ping) sockets
//     go as UDP's, in inetsk.go.
//   - netlinksk.go and packetsk.go: netlink and packet sockets (rings
//     set up again for their socket VMAs, internal/mem; SOCK_PACKET).
//
// Everything runs on the caller's goroutine, on stasis' own copies of
// the sockets (pidfd_getfd at dump; made in stasis at restore, passed
// into the tasks by the restore orchestrator). How long a TCP connection
// stays in repair mode, at dump and at restore, is told in tcp.go: the
// kinds hook into the table's and the restorer's end steps for it.
package sockets
