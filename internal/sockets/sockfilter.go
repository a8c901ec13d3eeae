package sockets

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/files"
)

// Socket filters (SO_ATTACH_FILTER), kept for every socket in
// sk_opts_entry.so_filter as criu does (sockets.c): one u64 per classic
// BPF instruction, code<<48 | jt<<40 | jf<<32 | k, so that the image does
// not depend on the layout of struct sock_filter. A packet socket of a
// capture program (tcpdump, dhclient) nearly always has one.
//
// An eBPF program (SO_ATTACH_BPF, SO_ATTACH_REUSEPORT_*) has no classic
// program to read back: the kernel answers EACCES and the socket is
// refused. SO_LOCK_FILTER is not kept (criu has no field for it).

// errEBPFFilter says why a socket with an eBPF filter is refused.
var errEBPFFilter = fmt.Errorf("an eBPF socket filter (SO_ATTACH_BPF) is attached to it: %w (an eBPF program cannot be read back from a socket; a classic SO_ATTACH_FILTER program can)", files.ErrUnsupported)

// dumpSockFilter returns the classic program attached to a socket in
// criu's encoding, nil if none.
func dumpSockFilter(sk int) ([]uint64, error) {
	// SO_GET_FILTER takes and returns its length in instructions, not
	// bytes: a buffer of BPF_MAXINSNS*8 bytes (the longest classic
	// program a socket takes) is always long enough.
	buf := make([]byte, unix.BPF_MAXINSNS*8)
	n, err := getsockoptBytes(sk, unix.SOL_SOCKET, unix.SO_GET_FILTER, buf)
	switch {
	case err == unix.EACCES:
		return nil, errEBPFFilter
	case err != nil:
		return nil, os.NewSyscallError("getsockopt SO_GET_FILTER", err)
	case n > unix.BPF_MAXINSNS:
		return nil, fmt.Errorf("getsockopt SO_GET_FILTER: %d instructions, more than %d", n, unix.BPF_MAXINSNS)
	}
	return encodeFilter(buf, n), nil
}

// encodeFilter encodes n struct sock_filter {u16 code; u8 jt, jf; u32 k}
// of b.
func encodeFilter(b []byte, n int) []uint64 {
	if n == 0 {
		return nil
	}
	prog := make([]uint64, n)
	for i := range prog {
		ins := b[8*i:]
		code, jt, jf, k := binary.NativeEndian.Uint16(ins), ins[2], ins[3], binary.NativeEndian.Uint32(ins[4:])
		prog[i] = uint64(code)<<48 | uint64(jt)<<40 | uint64(jf)<<32 | uint64(k)
	}
	return prog
}

func decodeFilter(prog []uint64) []unix.SockFilter {
	f := make([]unix.SockFilter, len(prog))
	for i, v := range prog {
		f[i] = unix.SockFilter{Code: uint16(v >> 48), Jt: uint8(v >> 40), Jf: uint8(v >> 32), K: uint32(v)}
	}
	return f
}

// restoreSockFilter attaches the program of an entry again; the kernel
// checks it as it did the first time.
func restoreSockFilter(fd int, prog []uint64) error {
	if len(prog) == 0 {
		return nil
	}
	if len(prog) > unix.BPF_MAXINSNS {
		return fmt.Errorf("socket filter of %d instructions, more than %d", len(prog), unix.BPF_MAXINSNS)
	}
	f := decodeFilter(prog)
	fprog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attach socket filter of %d instructions: %w", len(prog), os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err))
	}
	return nil
}
