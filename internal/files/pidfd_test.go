package files

import (
	"errors"
	"os"
	"testing"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidfd"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

func pidfdEntry(pid int32, flags uint32) *fdinfo.FileEntry {
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_PIDFD.Enum(), Id: proto.Uint32(7),
		Pidfd: &pidfd.PidfdEntry{Id: proto.Uint32(7), Ino: proto.Uint32(1), Flags: proto.Uint32(flags), Nspid: proto.Int32(pid), Fown: AnonFown()}}
}

// TestOpenPidfd: a pidfd entry opens a pidfd of its process (here this
// one) with its flags, or of a process that has ended; a damaged entry is
// refused as corrupt.
func TestOpenPidfd(t *testing.T) {
	r := &Restorer{}
	f, err := openPidfd(r, pidfdEntry(int32(os.Getpid()), unix.O_RDWR|unix.O_NONBLOCK))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := proc.ReadFdinfo(os.Getpid(), int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if pid, err := pidfdPid(fi); err != nil || pid != os.Getpid() || fi.Flags&unix.O_NONBLOCK == 0 {
		t.Errorf("pidfd of pid %d (%v), flags %#o: want this process, O_NONBLOCK", pid, err, fi.Flags)
	}
	f.Close()

	// An ended process: here the test binary, run with --version, which
	// it does not know: it exits at once, and is reaped.
	f, err = openPidfd(r, pidfdEntry(-1, unix.O_RDWR))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.PidfdSendSignal(int(f.Fd()), 0, nil, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("signal 0 through the pidfd of an ended process: %v, want ESRCH", err)
	}
	f.Close()

	for _, bad := range []*fdinfo.FileEntry{pidfdEntry(0, unix.O_RDWR), pidfdEntry(-7, unix.O_RDWR), pidfdEntry(1, unix.O_RDWR|unix.O_APPEND)} {
		if _, err := openPidfd(r, bad); !errors.Is(err, images.ErrCorrupt) {
			t.Errorf("openPidfd(%v) = %v, want a corrupt-image error", bad.GetPidfd(), err)
		}
	}
}
