package sockets

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// bindSockPacket binds a SOCK_PACKET socket to the interface named name:
// its address is a plain struct sockaddr whose sa_data holds the name,
// which x/sys/unix has no Sockaddr for.
func bindSockPacket(fd int, name string) error {
	var sa unix.RawSockaddr // sa_family, sa_data[14]
	sa.Family = unix.AF_PACKET
	for i := 0; i < len(name) && i < len(sa.Data)-1; i++ {
		sa.Data[i] = int8(name[i])
	}
	_, _, e := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	if e != 0 {
		return e
	}
	return nil
}
