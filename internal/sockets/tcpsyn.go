package sockets

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
)

// A TCP socket still connecting (SYN_SENT: connect in progress, no answer
// yet) has no stream to save: the peer knows nothing of it, or only a SYN
// it will see again. It is dumped with its ends and connects again after
// the restore, as a new attempt would: a non-blocking socket (whose
// connect has returned EINPROGRESS, the program waiting for it to become
// writable) gets a connect from stasis; a blocking one is left bound, as
// the connect the task is blocked in is a system call the restore makes
// it run again. The peer address is not given by getpeername before the
// connection exists: it comes from /proc/PID/net/tcp.

// dumpSynSent records the peer of a connecting socket.
func dumpSynSent(fd *files.Fd, ie *sk_inet.InetSkEntry) error {
	peer, err := procNetPeer(fd.Pid, int(ie.GetFamily()), fd.Stat.Ino)
	if err != nil {
		return fmt.Errorf("%s: the peer of a connecting socket: %w", fd, err)
	}
	ie.DstAddr, ie.DstPort = addrWords(peer.Addr()), proto.Uint32(uint32(peer.Port()))
	return nil
}

// procNetPeer finds the remote end of socket inode ino in pid's
// /proc/PID/net/tcp or tcp6.
func procNetPeer(pid, family int, ino uint64) (netip.AddrPort, error) {
	name := "tcp"
	if family == unix.AF_INET6 {
		name = "tcp6"
	}
	p := fmt.Sprintf("/proc/%d/net/%s", pid, name)
	f, err := os.Open(p)
	if err != nil {
		return netip.AddrPort{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	want := strconv.FormatUint(ino, 10)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 || fl[9] != want {
			continue
		}
		return parseProcAddr(fl[2])
	}
	return netip.AddrPort{}, fmt.Errorf("socket inode %d is not in %s", ino, p)
}

// parseProcAddr parses "0100007F:1F90" (an address as the kernel's
// 32-bit words, native order, and a port) from /proc/net/tcp*.
func parseProcAddr(s string) (netip.AddrPort, error) {
	a, pt, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(pt, 16, 16)
	b, herr := hex.DecodeString(a)
	if !ok || err != nil || herr != nil || (len(b) != 4 && len(b) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	for i := 0; i < len(b); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(b[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil // a v4-mapped peer of an IPv6 socket stays 16 bytes
}

// restoreSynSent binds the socket where it was and, if it is
// non-blocking, starts its connect again.
func restoreSynSent(fd int, ie *sk_inet.InetSkEntry, ends *inetEnds) error {
	if err := bindInet(fd, ie, ends); err != nil {
		return err
	}
	if ie.GetFlags()&unix.O_NONBLOCK == 0 {
		return nil // the task's connect, run again, connects it
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return os.NewSyscallError("fcntl O_NONBLOCK", err)
	}
	if err := unix.Connect(fd, ends.remoteSa); err != nil && err != unix.EINPROGRESS {
		return fmt.Errorf("connect again to %s: %w", ends.remote, os.NewSyscallError("connect", err))
	}
	return nil
}
