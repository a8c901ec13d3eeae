package sockets

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

// TCP sockets: listening ones (backlog, connections not yet accepted)
// and connections, whose stream is read and rebuilt with TCP_REPAIR
// (criu's sk-tcp.c and soccr/soccr.c; kernel: net/ipv4/tcp.c).
//
// Dump: the socket is put in repair mode through stasis' copy (the same
// socket), which freezes it: no segment goes out or is taken in, the
// queues and sequence numbers can be read. It stays in repair mode until
// Table.Finish: if the tree is killed, a socket closed in repair mode
// just disappears (tcp_disconnect sends no RST, no FIN), and the
// restored one takes over; if the tree goes on (-R, a failed dump),
// repair mode is turned off and the connection goes on as if nothing
// happened.
//
// Restore: a new socket in repair mode is bound, given the sequence
// numbers, "connected" (no SYN in repair mode), given its options, its
// queues and its window. Repair mode goes off in Restorer.Finish, once
// every task has its fds and before any runs; only then is the data the
// process had written but the kernel not yet sent queued normally, so
// nothing leaves before the process runs again.

// TCP_REPAIR queues (include/uapi/linux/tcp.h; TCP_REPAIR_ON/OFF and
// TCPOPT_* are unix's).
const (
	tcpNoQueue   = 0
	tcpRecvQueue = 1
	tcpSendQueue = 2
)

// TCPI_OPT_* bits of tcp_info.tcpi_options (include/uapi/linux/tcp.h).
const (
	tcpiOptTimestamps = 1
	tcpiOptSack       = 2
	tcpiOptWscale     = 4
)

// tcpInfo is the part of struct tcp_info stasis needs; x/sys' TCPInfo
// drops the byte of the window scales.
type tcpInfo struct {
	state, options       uint32
	sndWscale, rcvWscale uint32
	// For a listening socket, unacked is the accept queue's length and
	// sacked its backlog (tcp_get_info).
	unacked, sacked uint32
}

func getTCPInfo(sk int) (tcpInfo, error) {
	var b [232]byte
	n, err := getsockoptBytes(sk, unix.IPPROTO_TCP, unix.TCP_INFO, b[:])
	if err != nil {
		return tcpInfo{}, os.NewSyscallError("getsockopt TCP_INFO", err)
	}
	if n < 32 {
		return tcpInfo{}, fmt.Errorf("getsockopt TCP_INFO: %d bytes", n)
	}
	return tcpInfo{
		state: uint32(b[0]), options: uint32(b[5]),
		sndWscale: uint32(b[6] & 0xf), rcvWscale: uint32(b[6] >> 4),
		unacked: binary.NativeEndian.Uint32(b[24:]), sacked: binary.NativeEndian.Uint32(b[28:]),
	}, nil
}

// isTCPConn tells the states of a connection stasis can dump: data may
// still flow one way at least.
func isTCPConn(state uint32) bool {
	switch state {
	case linux.TCPEstablished, linux.TCPFinWait1, linux.TCPFinWait2, linux.TCPCloseWait, linux.TCPLastAck, linux.TCPClosing:
		return true
	}
	return false
}

// sndFinSent: states in which this side has sent its FIN (criu's
// SNDQ_FIRST_FIN); it is not data and is not counted in the queues.
func sndFinSent(state uint32) bool {
	return state == linux.TCPFinWait1 || state == linux.TCPFinWait2 || state == linux.TCPClosing || state == linux.TCPLastAck
}

// rcvFinGot: states in which the peer's FIN has arrived (criu's
// RCVQ_FIRST_FIN and RCVQ_SECOND_FIN); it counts in inq_seq, not in the
// queue's bytes.
func rcvFinGot(state uint32) bool {
	return state == linux.TCPCloseWait || state == linux.TCPLastAck || state == linux.TCPClosing
}

// tcpDump is the TCP state of a dump: the streams to write and stasis'
// copies of the sockets in repair mode.
type tcpDump struct {
	streams  []tcpStream
	repaired []*repairedSk
}

type tcpStream struct {
	ino       uint32
	e         *tcp_stream.TcpStreamEntry
	inq, outq []byte
}

// repairedSk is stasis' copy of a dumped connection's socket.
type repairedSk struct {
	fd     int
	reuse  bool // SO_REUSEADDR, cleared by leaving repair mode
	repair bool // in repair mode now
}

// setRepair turns the socket's repair mode on or off.
func (sk *repairedSk) setRepair(on bool) error {
	if on == sk.repair {
		return nil
	}
	if on {
		if err := unix.SetsockoptInt(sk.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
			return os.NewSyscallError("setsockopt TCP_REPAIR", err)
		}
		sk.repair = true
		return nil
	}
	if err := unix.SetsockoptInt(sk.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
		return os.NewSyscallError("setsockopt TCP_REPAIR off", err)
	}
	sk.repair = false
	if sk.reuse {
		if err := unix.SetsockoptInt(sk.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEADDR", err)
		}
	}
	return nil
}

func tcpDumpOf(t *files.Table) *tcpDump {
	return files.DumpState(t, "tcp", func() *tcpDump {
		st := &tcpDump{}
		t.AtFinish(func(killed bool) error { return st.finish(killed) })
		t.AtBeforeKill(st.repairAll)
		return st
	})
}

// repairAll puts every dumped connection back into repair mode before
// the tree is killed (see dumpTCPStream).
func (st *tcpDump) repairAll() error {
	var errs []error
	for _, sk := range st.repaired {
		errs = append(errs, sk.setRepair(true))
	}
	return errors.Join(errs...)
}

func init() {
	files.Register(&files.Kind{Write: writeTCPStreams})
}

func dumpTCP(t *files.Table, fd *files.Fd, sk int, ie *sk_inet.InetSkEntry) error {
	info, err := getTCPInfo(sk)
	if err != nil {
		return err
	}
	if ie.TcpOpts, err = dumpTCPOpts(sk); err != nil {
		return err
	}
	ends, err := endsOf(ie)
	if err != nil {
		return err
	}
	ie.State = proto.Uint32(info.state)
	if isMPTCP(ie) {
		if err := checkMPTCP(fd, sk, ie, info.state, ends); err != nil {
			return err
		}
	}
	switch {
	case info.state == linux.TCPListen:
		ie.Backlog = proto.Uint32(info.sacked)
		if info.unacked > 0 && !t.Opts.SkipInFlight {
			return &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Target: fd.Target,
				Kind: fmt.Sprintf("a TCP socket listening on %s with %d connection(s) not yet accepted", ends.local, info.unacked),
				Hint: "dump with --skip-in-flight to drop them (their clients see a reset), as criu"}
		}
	case info.state == linux.TCPClose:
	case info.state == linux.TCPSynSent:
		return dumpSynSent(fd, ie)
	case isTCPConn(info.state) && t.Opts.TCPClose:
		return nil // recorded as it is, to be restored closed
	case isTCPConn(info.state):
		if !t.Opts.TCPEstablished {
			return &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Target: fd.Target,
				Kind: fmt.Sprintf("TCP connection %s -> %s (%s)", ends.local, ends.remote, tcpStateName(info.state)),
				Hint: "dump with --tcp-established to checkpoint it (and restore with --tcp-established)"}
		}
		if t.Opts.Preflight {
			return nil // repair mode would stop the connection
		}
		return dumpTCPStream(t, fd, sk, ie, ends)
	default:
		return &files.UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Target: fd.Target,
			Kind: fmt.Sprintf("a TCP socket %s -> %s in state %s", ends.local, ends.remote, tcpStateName(info.state)),
			Hint: "only listening, connecting, closed and established (or half-closed) sockets can be checkpointed; retry once it has settled"}
	}
	return nil
}

// dumpTCPStream puts the connection in repair mode and reads its
// stream, as soccr's libsoccr_save.
func dumpTCPStream(t *files.Table, fd *files.Fd, sk int, ie *sk_inet.InetSkEntry, ends *inetEnds) error {
	conn := fmt.Sprintf("TCP connection %s -> %s", ends.local, ends.remote)
	if t.Opts.OnConnection != nil {
		if err := t.Opts.OnConnection(files.Conn{Local: ends.local, Remote: ends.remote}); err != nil {
			return fmt.Errorf("lock %s: %w", conn, err)
		}
	}
	st := tcpDumpOf(t)
	if err := unix.SetsockoptInt(sk, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return fmt.Errorf("%s: %w (TCP_REPAIR needs CAP_NET_ADMIN in the socket's network namespace)",
			conn, os.NewSyscallError("setsockopt TCP_REPAIR", err))
	}
	// From here on Finish turns repair mode off again if the tree goes on.
	keep, err := unix.FcntlInt(uintptr(sk), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		unix.SetsockoptInt(sk, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF)
		return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	rsk := &repairedSk{fd: keep, reuse: ie.GetOpts().GetReuseaddr(), repair: true}
	st.repaired = append(st.repaired, rsk)
	s, err := readTCPStream(sk)
	if err == nil && t.Opts.OnConnection != nil {
		// Read: the connection leaves repair mode at once, while the
		// network lock keeps its packets out, so that a stasis killed
		// from now on (SIGKILL cannot be caught) does not leave it mute
		// in repair mode, which outlives stasis. BeforeKill puts it back
		// just before the tree is killed. Without the lock the peer's
		// bytes would come in after the read: it stays in repair mode.
		if rerr := rsk.setRepair(false); rerr != nil {
			err = rerr
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", conn, err)
	}
	state := s.state
	if !isTCPConn(state) {
		return fmt.Errorf("%s went to state %s while being dumped; retry", conn, tcpStateName(state))
	}
	ie.State = proto.Uint32(state)
	st.streams = append(st.streams, tcpStream{ino: ie.GetIno(), e: s.e, inq: s.inq, outq: s.outq})
	return nil
}

type tcpSaved struct {
	state     uint32
	e         *tcp_stream.TcpStreamEntry
	inq, outq []byte
}

// readTCPStream reads a connection in repair mode.
//
//	inq_len  = rcv_nxt - copied_seq (SIOCINQ), inq_seq = rcv_nxt
//	outq_len = write_seq - snd_una (SIOCOUTQ), outq_seq = write_seq
//	unsq_len = write_seq - snd_nxt (SIOCOUTQNSD): never sent
func readTCPStream(sk int) (*tcpSaved, error) {
	info, err := getTCPInfo(sk)
	if err != nil {
		return nil, err
	}
	ioctl := func(req uint, name string) (uint32, error) {
		v, err := unix.IoctlGetInt(sk, req)
		if err != nil {
			return 0, os.NewSyscallError("ioctl "+name, err)
		}
		return uint32(v), nil
	}
	outq, err := ioctl(unix.SIOCOUTQ, "SIOCOUTQ")
	if err != nil {
		return nil, err
	}
	unsq, err := ioctl(unix.SIOCOUTQNSD, "SIOCOUTQNSD")
	if err != nil {
		return nil, err
	}
	if sndFinSent(info.state) {
		outq, unsq = max(outq, 1)-1, max(unsq, 1)-1
	}
	inq, err := ioctl(unix.SIOCINQ, "SIOCINQ")
	if err != nil {
		return nil, err
	}
	mss, err := unix.GetsockoptInt(sk, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt TCP_MAXSEG", err)
	}
	e := &tcp_stream.TcpStreamEntry{
		InqLen: proto.Uint32(inq), OutqLen: proto.Uint32(outq), UnsqLen: proto.Uint32(unsq),
		OptMask: proto.Uint32(info.options), MssClamp: proto.Uint32(uint32(mss)),
		SndWscale: proto.Uint32(0), RcvWscale: proto.Uint32(0),
	}
	if info.options&tcpiOptWscale != 0 {
		e.SndWscale, e.RcvWscale = proto.Uint32(info.sndWscale), proto.Uint32(info.rcvWscale)
	}
	if info.options&tcpiOptTimestamps != 0 {
		ts, err := unix.GetsockoptInt(sk, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return nil, os.NewSyscallError("getsockopt TCP_TIMESTAMP", err)
		}
		e.Timestamp = proto.Uint32(uint32(ts))
	}
	var w [20]byte
	if _, err := getsockoptBytes(sk, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, w[:]); err != nil {
		return nil, os.NewSyscallError("getsockopt TCP_REPAIR_WINDOW", err)
	}
	e.SndWl1 = proto.Uint32(binary.NativeEndian.Uint32(w[0:]))
	e.SndWnd = proto.Uint32(binary.NativeEndian.Uint32(w[4:]))
	e.MaxWindow = proto.Uint32(binary.NativeEndian.Uint32(w[8:]))
	e.RcvWnd = proto.Uint32(binary.NativeEndian.Uint32(w[12:]))
	e.RcvWup = proto.Uint32(binary.NativeEndian.Uint32(w[16:]))
	s := &tcpSaved{state: info.state, e: e}
	var seq uint32
	if seq, s.inq, err = peekQueue(sk, tcpRecvQueue, inq); err != nil {
		return nil, fmt.Errorf("receive queue: %w", err)
	}
	e.InqSeq = proto.Uint32(seq)
	if seq, s.outq, err = peekQueue(sk, tcpSendQueue, outq); err != nil {
		return nil, fmt.Errorf("send queue: %w", err)
	}
	e.OutqSeq = proto.Uint32(seq)
	return s, nil
}

// peekQueue reads the sequence number and the n bytes of a queue of a
// socket in repair mode, without consuming them (the tree may go on).
func peekQueue(sk, queue int, n uint32) (uint32, []byte, error) {
	if err := unix.SetsockoptInt(sk, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return 0, nil, os.NewSyscallError("setsockopt TCP_REPAIR_QUEUE", err)
	}
	seq, err := unix.GetsockoptInt(sk, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return 0, nil, os.NewSyscallError("getsockopt TCP_QUEUE_SEQ", err)
	}
	if n == 0 {
		return uint32(seq), nil, nil
	}
	// One byte more than expected proves there is no more.
	buf := make([]byte, n+1)
	got, _, err := unix.Recvfrom(sk, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return 0, nil, os.NewSyscallError("recv MSG_PEEK", err)
	}
	if got != int(n) {
		return 0, nil, fmt.Errorf("%d bytes queued, %d read", n, got)
	}
	return uint32(seq), buf[:n], nil
}

// finish ends the dump's hold on the connections: repair mode off if
// the tree goes on (and SO_REUSEADDR back: leaving repair mode clears
// it), then stasis' copies closed. After a kill the copies are the last
// holders: closed in repair mode, the sockets vanish without a word to
// their peers.
func (st *tcpDump) finish(killed bool) error {
	var errs []error
	for _, sk := range st.repaired {
		if !killed {
			errs = append(errs, sk.setRepair(false))
		}
		unix.Close(sk.fd)
	}
	st.repaired = nil
	return errors.Join(errs...)
}

// tcpStreamImage names a connection's image by its socket's inode in hex,
// as criu does (tcp-stream-%x.img).
func tcpStreamImage(ino uint32) string { return fmt.Sprintf("tcp-stream-%x.img", ino) }

func writeTCPStreams(t *files.Table, dir *images.Dir) error {
	st := tcpDumpOf(t)
	for _, s := range st.streams {
		w, err := dir.NewWriter(tcpStreamImage(s.ino))
		if err != nil {
			return err
		}
		w.Write(s.e)
		if len(s.inq)+len(s.outq) > 0 {
			w.WriteExtra(append(s.inq[:len(s.inq):len(s.inq)], s.outq...))
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
	return nil
}

// dumpTCPOpts reads the TCP level options criu keeps.
func dumpTCPOpts(sk int) (*tcp_stream.TcpOptsEntry, error) {
	o := &tcp_stream.TcpOptsEntry{}
	for _, opt := range []struct {
		name string
		opt  int
		set  func(int)
	}{
		{"TCP_CORK", unix.TCP_CORK, func(v int) { o.Cork = proto.Bool(v != 0) }},
		{"TCP_NODELAY", unix.TCP_NODELAY, func(v int) { o.Nodelay = proto.Bool(v != 0) }},
		{"TCP_KEEPCNT", unix.TCP_KEEPCNT, func(v int) { o.Keepcnt = proto.Uint32(uint32(v)) }},
		{"TCP_KEEPIDLE", unix.TCP_KEEPIDLE, func(v int) { o.Keepidle = proto.Uint32(uint32(v)) }},
		{"TCP_KEEPINTVL", unix.TCP_KEEPINTVL, func(v int) { o.Keepintvl = proto.Uint32(uint32(v)) }},
	} {
		v, err := unix.GetsockoptInt(sk, unix.IPPROTO_TCP, opt.opt)
		if err != nil {
			return nil, fmt.Errorf("getsockopt %s: %w", opt.name, err)
		}
		opt.set(v)
	}
	return o, nil
}

// restoreTCPOpts sets the TCP options of a TCP entry. Those that push
// data out (TCP_CORK off, TCP_NODELAY) wait, on a connection, for
// repair mode to end (finishTCPConn).
func restoreTCPOpts(fd int, ie *sk_inet.InetSkEntry, conn bool) error {
	o := ie.GetTcpOpts()
	if ie.GetType() != unix.SOCK_STREAM || o == nil {
		return nil
	}
	var errs []error
	set := func(opt int, name string, v uint32) {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, opt, int(v)); err != nil {
			errs = append(errs, os.NewSyscallError("setsockopt "+name, err))
		}
	}
	if o.Keepcnt != nil {
		set(unix.TCP_KEEPCNT, "TCP_KEEPCNT", o.GetKeepcnt())
	}
	if o.Keepidle != nil {
		set(unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", o.GetKeepidle())
	}
	if o.Keepintvl != nil {
		set(unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", o.GetKeepintvl())
	}
	if !conn {
		set(unix.TCP_CORK, "TCP_CORK", uint32(boolInt(o.GetCork())))
		set(unix.TCP_NODELAY, "TCP_NODELAY", uint32(boolInt(o.GetNodelay())))
	}
	return errors.Join(errs...)
}

// restoreTCPConn rebuilds a connection in repair mode (soccr's
// libsoccr_restore) and registers the end of repair for Finish. The
// steps run in the kernel's order: a socket in repair mode takes its
// sequence numbers before its "connect", the options the handshake
// would have negotiated after it, its queues before its window, and the
// FINs last, as they follow every byte.
func restoreTCPConn(r *files.Restorer, fd int, ie *sk_inet.InetSkEntry, ends *inetEnds) error {
	if r.Opts.TCPClose {
		return closeTCPConn(fd)
	}
	if !r.Opts.TCPEstablished {
		return errors.New("the images hold an established connection: restore with --tcp-established (or --tcp-close to get it back closed)")
	}
	c, err := readTCPConn(r.Dir, fd, ie, ends)
	if err != nil {
		return err
	}
	if err := c.connect(); err != nil {
		return err
	}
	if err := c.setRepairOptions(); err != nil {
		return err
	}
	unsent, buf, err := c.refillQueues()
	if err != nil {
		return err
	}
	if err := c.setWindow(); err != nil {
		return err
	}
	if err := r.InNetNS(c.replayFins); err != nil {
		return err
	}
	return c.endRepairAtRun(r, unsent, buf)
}

// closeTCPConn is criu's --tcp-close: a socket that never connected,
// shut down both ways: reads give EOF, writes EPIPE.
func closeTCPConn(fd int) error {
	if err := unix.Shutdown(fd, unix.SHUT_RDWR); err != nil && err != unix.ENOTCONN {
		return os.NewSyscallError("shutdown", err)
	}
	return nil
}

// tcpConn is a connection being restored: its new socket and what its
// entry and its tcp-stream image hold.
type tcpConn struct {
	fd        int
	ie        *sk_inet.InetSkEntry
	ends      *inetEnds
	e         *tcp_stream.TcpStreamEntry
	inq, outq []byte
	state     uint32
	// inqSeq and outqSeq are the sequence numbers that follow each
	// queue, less the FIN that replayFins sends again.
	inqSeq, outqSeq uint32
}

// readTCPConn reads the stream of the connection of ie and checks what
// the steps below rely on.
func readTCPConn(dir *images.Dir, fd int, ie *sk_inet.InetSkEntry, ends *inetEnds) (*tcpConn, error) {
	e, inq, outq, err := readTCPStreamImage(dir, ie.GetIno())
	if err != nil {
		return nil, err
	}
	c := &tcpConn{fd: fd, ie: ie, ends: ends, e: e, inq: inq, outq: outq, state: ie.GetState()}
	if e.GetUnsqLen() > e.GetOutqLen() {
		return nil, fmt.Errorf("%s: unsent %d bytes of %d queued: %w", tcpStreamImage(ie.GetIno()), e.GetUnsqLen(), e.GetOutqLen(), images.ErrCorrupt)
	}
	c.outqSeq = e.GetOutqSeq()
	if sndFinSent(c.state) {
		c.outqSeq-- // the FIN is queued again by shutdown in replayFins
	}
	c.inqSeq = e.GetInqSeq()
	if rcvFinGot(c.state) {
		c.inqSeq-- // the peer's FIN comes again from sendPeerFin in replayFins
	}
	return c, nil
}

// connect puts the socket in repair mode, binds it, gives each queue the
// sequence number of its first byte and "connects" it: in repair mode
// connect sends no SYN, it only sets the peer, so the connection takes
// up at the dumped sequence numbers.
func (c *tcpConn) connect() error {
	if err := unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return os.NewSyscallError("setsockopt TCP_REPAIR", err)
	}
	// In repair mode the port is taken even if a listener of the tree
	// holds it (sk_reuse = SK_FORCE_REUSE).
	if err := bindInet(c.fd, c.ie, c.ends); err != nil {
		return err
	}
	if err := setQueueSeq(c.fd, tcpRecvQueue, c.inqSeq-c.e.GetInqLen()); err != nil {
		return err
	}
	if err := setQueueSeq(c.fd, tcpSendQueue, c.outqSeq-c.e.GetOutqLen()); err != nil {
		return err
	}
	if err := unix.Connect(c.fd, c.ends.remoteSa); err != nil {
		return fmt.Errorf("connect in repair mode to %s: %w", c.ends.remote, os.NewSyscallError("connect", err))
	}
	return nil
}

// setRepairOptions gives the connection what its handshake negotiated
// (SACK, window scales, timestamps, MSS) and its timestamp clock: the
// connect in repair mode had no handshake, and the peer goes on with
// what it agreed to.
func (c *tcpConn) setRepairOptions() error {
	e := c.e
	opts := []unix.TCPRepairOpt{}
	if e.GetOptMask()&tcpiOptSack != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_SACK_PERMITTED})
	}
	if e.GetOptMask()&tcpiOptWscale != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_WINDOW, Val: e.GetSndWscale() + e.GetRcvWscale()<<16})
	}
	if e.GetOptMask()&tcpiOptTimestamps != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_TIMESTAMP})
	}
	opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_MAXSEG, Val: e.GetMssClamp()})
	if err := unix.SetsockoptTCPRepairOpt(c.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, opts); err != nil {
		return os.NewSyscallError("setsockopt TCP_REPAIR_OPTIONS", err)
	}
	if e.GetOptMask()&tcpiOptTimestamps != 0 {
		if err := unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP, int(e.GetTimestamp())); err != nil {
			return os.NewSyscallError("setsockopt TCP_TIMESTAMP", err)
		}
	}
	return nil
}

// refillQueues puts back what was received and not read, and what was
// sent and not acknowledged, and returns what was never sent, which is
// queued only once repair mode is off (finishTCPConn), and the send
// buffer's size to set back then, if it grew (buf).
func (c *tcpConn) refillQueues() (unsent []byte, buf *sndbuf, err error) {
	if err := fillQueue(c.fd, tcpRecvQueue, c.inq); err != nil {
		return nil, nil, fmt.Errorf("refill receive queue (%d bytes): %w", len(c.inq), err)
	}
	// What was sent and not acknowledged goes back as sent; what was
	// never sent is queued only once repair mode is off (finishTCPConn),
	// so it goes out as new data. With a FIN sent, all of it precedes
	// the FIN: it goes back as sent and is retransmitted.
	sent := c.outq[:len(c.outq)-int(c.e.GetUnsqLen())]
	unsent = c.outq[len(sent):]
	if sndFinSent(c.state) {
		sent, unsent = c.outq, nil
	}
	// The original socket held the whole queue within its send buffer,
	// but in buffers of its own sizes: refilled here, the same bytes may
	// take more of it (the skbs' truesize), the dumped sndbuf falls a few
	// KiB short and the unsent bytes could only wait, after repair, for
	// the peer to open its window, which an idle client never does. The
	// buffer grows for the refill and gets its size back in finishTCPConn:
	// the writer then waits for the peer, as it did.
	if len(c.outq) > 0 {
		if buf, err = growSndbuf(c.fd, len(c.outq)); err != nil {
			return nil, nil, err
		}
	}
	if err := fillQueue(c.fd, tcpSendQueue, sent); err != nil {
		return nil, nil, fmt.Errorf("refill send queue (%d bytes): %w", len(sent), err)
	}
	return unsent, buf, nil
}

// setWindow gives back both windows, so that neither side sends beyond
// what the other offered (images without them keep the kernel's).
func (c *tcpConn) setWindow() error {
	e := c.e
	rcvWnd, rcvWup := e.GetRcvWnd(), e.GetRcvWup()
	if rcvFinGot(c.state) {
		rcvWnd, rcvWup = rcvWnd+1, rcvWup-1 // as before the FIN came in
	}
	var w [20]byte
	for i, v := range []uint32{e.GetSndWl1(), e.GetSndWnd(), e.GetMaxWindow(), rcvWnd, rcvWup} {
		binary.NativeEndian.PutUint32(w[4*i:], v)
	}
	if e.SndWnd != nil {
		if err := setsockoptBytes(c.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, w[:]); err != nil {
			return os.NewSyscallError("setsockopt TCP_REPAIR_WINDOW", err)
		}
	}
	return nil
}

// replayFins brings a closing connection to its state again: a FIN is
// no byte of a queue, so each one is sent again, in the order they came:
// ours first in FIN_WAIT1/2 and CLOSING, the peer's first in CLOSE_WAIT
// and LAST_ACK.
func (c *tcpConn) replayFins() error {
	if c.state == linux.TCPFinWait1 || c.state == linux.TCPFinWait2 || c.state == linux.TCPClosing {
		if err := queueOwnFin(c.fd); err != nil {
			return err
		}
	}
	if rcvFinGot(c.state) {
		win := uint16(min(c.e.GetSndWnd()>>c.e.GetSndWscale(), 0xffff))
		if err := sendPeerFin(c.ends.local, c.ends.remote, c.inqSeq, c.outqSeq-c.e.GetOutqLen(), win); err != nil {
			return err
		}
		want := uint32(linux.TCPCloseWait)
		if c.state == linux.TCPClosing {
			want = linux.TCPClosing
		}
		if err := waitTCPState(c.fd, want); err != nil {
			return fmt.Errorf("the peer's FIN sent again: %w", err)
		}
	}
	if c.state == linux.TCPLastAck {
		if err := queueOwnFin(c.fd); err != nil {
			return err
		}
	}
	return nil
}

// endRepairAtRun leaves the connection in repair mode until the tasks
// are about to run (Restorer.Finish), so that nothing leaves before they
// do, and puts it back into repair mode if the restore fails after that
// (Restorer.Rollback), so that it vanishes without a word to the peer.
func (c *tcpConn) endRepairAtRun(r *files.Restorer, unsent []byte, buf *sndbuf) error {
	// The queues are complete: none is selected any more, as soccr
	// leaves it.
	if err := unix.SetsockoptInt(c.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpNoQueue); err != nil {
		return os.NewSyscallError("setsockopt TCP_REPAIR_QUEUE", err)
	}
	// The restorer's file may be closed before Finish (on a failure):
	// keep a copy of our own.
	keep, err := unix.FcntlInt(uintptr(c.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err)
	}
	ie, ends := c.ie, c.ends
	done := false
	r.OnDone(func() error {
		unix.Close(keep)
		return nil
	})
	r.OnRollback(func() error {
		if !done {
			return nil // still in repair mode
		}
		if err := unix.SetsockoptInt(keep, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
			return fmt.Errorf("TCP connection %s -> %s: %w", ends.local, ends.remote, os.NewSyscallError("setsockopt TCP_REPAIR", err))
		}
		return nil
	})
	r.BeforeRun(func() error {
		if done {
			return nil
		}
		done = true
		if err := finishTCPConn(keep, ie, unsent, buf); err != nil {
			return fmt.Errorf("TCP connection %s -> %s: %w", ends.local, ends.remote, err)
		}
		return nil
	})
	return nil
}

// queueOwnFin puts this side's FIN back as sent: the peer has it
// (FIN_WAIT2) or gets it again with the retransmission (FIN_WAIT1,
// CLOSING, LAST_ACK); an ACK of it lost with the old socket comes again
// then too.
func queueOwnFin(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
		return os.NewSyscallError("setsockopt TCP_REPAIR_QUEUE", err)
	}
	if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
		return os.NewSyscallError("shutdown SHUT_WR in repair mode", err)
	}
	return nil
}

// waitTCPState waits for the stack to take a segment sent to the socket.
func waitTCPState(fd int, want uint32) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		info, err := getTCPInfo(fd)
		if err != nil {
			return err
		}
		if info.state == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("state %s, want %s", tcpStateName(info.state), tcpStateName(want))
		}
		time.Sleep(time.Millisecond)
	}
}

// finishTCPConn ends repair mode on a restored connection, just before
// its tasks run: the options that push data, SO_REUSEADDR (cleared by
// leaving repair mode), then the data never sent, and the send buffer's
// size as dumped if it grew for the refill (buf).
func finishTCPConn(fd int, ie *sk_inet.InetSkEntry, unsent []byte, buf *sndbuf) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
		return os.NewSyscallError("setsockopt TCP_REPAIR off", err)
	}
	if ie.GetOpts().GetReuseaddr() {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return os.NewSyscallError("setsockopt SO_REUSEADDR", err)
		}
	}
	if o := ie.GetTcpOpts(); o != nil {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_CORK, boolInt(o.GetCork())); err != nil {
			return os.NewSyscallError("setsockopt TCP_CORK", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, boolInt(o.GetNodelay())); err != nil {
			return os.NewSyscallError("setsockopt TCP_NODELAY", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(unsent) > 0 {
		n, err := linux.SendmsgN(fd, unsent, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		switch {
		case errors.Is(err, unix.EAGAIN):
			if time.Now().After(deadline) {
				return fmt.Errorf("queue %d bytes never sent: the send buffer stays full", len(unsent))
			}
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, 100)
			continue
		case err != nil:
			return fmt.Errorf("queue %d bytes never sent: %w", len(unsent), err)
		}
		unsent = unsent[n:]
	}
	if buf != nil {
		return buf.restore(fd)
	}
	return nil
}

// sndbuf is a socket's send buffer size and SO_BUF_LOCK, to set back.
type sndbuf struct{ size, lock int }

// growSndbuf makes room for n more bytes (twice that, for the skbs'
// overhead) in the send buffer of fd and returns what it was.
func growSndbuf(fd, n int) (*sndbuf, error) {
	size, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil {
		return nil, os.NewSyscallError("getsockopt SO_SNDBUF", err)
	}
	lock, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK)
	if err != nil {
		lock = -1 // a kernel before 5.14: SO_SNDBUFFORCE below locks it, as restoreSockOpts did
	}
	// The kernel doubles the value (and caps it at INT_MAX).
	want := min(int64(size)+2*int64(n), math.MaxInt32) / 2
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, int(want)); err != nil {
		return nil, fmt.Errorf("grow the send buffer to refill %d bytes: %w", n, os.NewSyscallError("setsockopt SO_SNDBUFFORCE", err))
	}
	return &sndbuf{size: size, lock: lock}, nil
}

// restore sets the send buffer back to what growSndbuf found. Bytes
// queued beyond it stay: they go out as the peer acknowledges, and the
// writer waits until the queue is below the size again.
func (b *sndbuf) restore(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, b.size/2); err != nil {
		return fmt.Errorf("set the send buffer back to %d bytes: %w", b.size, os.NewSyscallError("setsockopt SO_SNDBUFFORCE", err))
	}
	if b.lock >= 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK, b.lock); err != nil {
			return os.NewSyscallError("setsockopt SO_BUF_LOCK", err)
		}
	}
	return nil
}

func setQueueSeq(fd, queue int, seq uint32) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return os.NewSyscallError("setsockopt TCP_REPAIR_QUEUE", err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, int(int32(seq))); err != nil {
		return os.NewSyscallError("setsockopt TCP_QUEUE_SEQ", err)
	}
	return nil
}

// fillQueue writes data into a queue of a socket in repair mode. The
// kernel puts each write into the receive queue as one linear buffer and
// may refuse a large one: smaller pieces then (as soccr).
func fillQueue(fd, queue int, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return os.NewSyscallError("setsockopt TCP_REPAIR_QUEUE", err)
	}
	chunk := min(len(data), 1<<20)
	for len(data) > 0 {
		n, err := linux.SendmsgN(fd, data[:min(chunk, len(data))], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err != nil || n == 0 {
			if chunk > 1024 {
				chunk /= 2
				continue
			}
			if err == nil {
				err = os.NewSyscallError("sendmsg", unix.EAGAIN)
			}
			return fmt.Errorf("%d bytes left: %w", len(data), err)
		}
		data = data[n:]
	}
	return nil
}

// readTCPStreamImage reads tcp-stream-INO.img.
func readTCPStreamImage(dir *images.Dir, ino uint32) (*tcp_stream.TcpStreamEntry, []byte, []byte, error) {
	name := tcpStreamImage(ino)
	if legacy := fmt.Sprintf("tcp-stream-%d.img", ino); !dir.Has(name) && dir.Has(legacy) {
		name = legacy // written by stasis before it named them as criu
	}
	rd, err := dir.NewReader(name)
	if err != nil {
		return nil, nil, nil, err
	}
	defer rd.Close()
	e := &tcp_stream.TcpStreamEntry{}
	if err := rd.Must(e); err != nil {
		return nil, nil, nil, err
	}
	extra, err := rd.ReadExtra()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("read %s: %w", name, err)
	}
	inq, outq, err := images.TCPQueues(e, extra)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return e, inq, outq, nil
}
