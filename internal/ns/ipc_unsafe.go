package ns

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// System V calls that x/sys/unix lacks, on raw struct buffers laid out as
// the x86_64 uapi has them (include/uapi/linux/{sem,msg,shm}.h, asm
// ipcbuf.h): every buffer is bigger than the kernel's struct.

func bufAddr(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func semctl(id, num, cmd int, arg []byte) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), bufAddr(arg), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func semget(key int32, n, flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_SEMGET, uintptr(key), uintptr(n), uintptr(flags))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// semGetAll reads the n values of semaphore set id.
func semGetAll(id, n int) ([]uint16, error) {
	b := make([]byte, 2*n+2)
	if _, err := semctl(id, 0, semGetAllCmd, b); err != nil {
		return nil, err
	}
	v := make([]uint16, n)
	for i := range v {
		v[i] = binary.NativeEndian.Uint16(b[2*i:])
	}
	return v, nil
}

func semSetAll(id int, v []uint16) error {
	b := make([]byte, 2*len(v)+2)
	for i, x := range v {
		binary.NativeEndian.PutUint16(b[2*i:], x)
	}
	_, err := semctl(id, 0, semSetAllCmd, b)
	return err
}

func msgctl(id, cmd int, buf []byte) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(cmd), bufAddr(buf))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func msgget(key int32, flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(key), uintptr(flags), 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// msgCopy copies message number idx of queue id into buf (mtype, then
// text) without taking it off the queue (MSG_COPY), returning the text
// size.
func msgCopy(id, idx int, buf []byte) (int, error) {
	const msgCopyFlag = 0o40000
	r, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), bufAddr(buf), uintptr(len(buf)-8), uintptr(idx), unix.IPC_NOWAIT|msgCopyFlag, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// msgsnd queues buf (mtype, then text) without waiting.
func msgsnd(id int, buf []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), bufAddr(buf), uintptr(len(buf)-8), unix.IPC_NOWAIT, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// shmAt attaches segment id and returns its memory and address.
func shmAt(id int, flags int) ([]byte, uintptr, error) {
	b, err := unix.SysvShmAttach(id, 0, flags)
	if err != nil {
		return nil, 0, err
	}
	return b, bufAddr(b), nil
}

// semctl commands (include/uapi/linux/sem.h).
const (
	semGetAllCmd = 13
	semSetAllCmd = 17
)
