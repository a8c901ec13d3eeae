package sockets

import (
	"fmt"

	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/linux"
)

// MPTCP sockets (IPPROTO_MPTCP, 262): every Go >= 1.24 net/http server
// listens with one by default. criu 4.2 refuses them all ("Unsupported
// proto 262"). A listening, bound or unbound one holds no stream: it is
// made again as an MPTCP socket with its address, backlog and options,
// as a TCP one (inetsk.go, tcp.go). A connection cannot be: the kernel
// has no repair mode for MPTCP (TCP_REPAIR is refused on an MPTCP socket
// before it connects, so one that fell back to plain TCP cannot be made
// again either), so it is refused with what the user can do. A client
// without MPTCP that an MPTCP listener accepts is a plain TCP socket
// (SO_PROTOCOL 6): it goes through TCP_REPAIR as any, so a Go server's
// keep-alive connections from ordinary clients are checkpointed.

// tcpIsMPTCP is TCP_IS_MPTCP (linux/tcp.h): 1 while a connected MPTCP
// socket still runs MPTCP, 0 once it fell back to plain TCP.
const tcpIsMPTCP = 43

func isMPTCP(ie *sk_inet.InetSkEntry) bool {
	return ie.GetType() == unix.SOCK_STREAM && ie.GetProto() == unix.IPPROTO_MPTCP
}

// checkMPTCP refuses an MPTCP socket in a state that holds a stream.
func checkMPTCP(fd *files.Fd, sk int, ie *sk_inet.InetSkEntry, state uint32, ends *inetEnds) error {
	if state == linux.TCPListen || state == linux.TCPClose {
		return nil
	}
	how := "multipath"
	if v, err := unix.GetsockoptInt(sk, unix.IPPROTO_TCP, tcpIsMPTCP); err == nil && v == 0 {
		how = "fallen back to plain TCP"
	}
	return &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Target: fd.Target,
		Kind: fmt.Sprintf("an MPTCP connection (IPPROTO_MPTCP, %s) %s -> %s in state %s", how, ends.local, ends.remote, tcpStateName(state)),
		Hint: "the kernel has no repair mode for MPTCP, so no connection of it can be checkpointed (criu 4.2 refuses every MPTCP socket); " +
			"dump once it has closed, or run the program without MPTCP (a Go program: GODEBUG=multipathtcp=0); listening MPTCP sockets are restored"}
}
