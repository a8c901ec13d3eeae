package ns

import (
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

// UTS namespace: hostname and domainname, utsns-ID.img.

func utsName(id uint32) string { return fmt.Sprintf("utsns-%d.img", id) }

func dumpUTS(dir *images.Dir, pid int, id uint32) error {
	var u unix.Utsname
	err := linux.InNamespace(pid, unix.CLONE_NEWUTS, func() error {
		return os.NewSyscallError("uname", unix.Uname(&u))
	})
	if err != nil {
		return fmt.Errorf("uts namespace of pid %d: %w", pid, err)
	}
	return dir.Write(utsName(id), &utsns.UtsnsEntry{
		Nodename:   proto.String(unix.ByteSliceToString(u.Nodename[:])),
		Domainname: proto.String(unix.ByteSliceToString(u.Domainname[:])),
	})
}

type utsImage struct {
	file string
	e    *utsns.UtsnsEntry
}

func readUTS(dir *images.Dir, id uint32) (*utsImage, error) {
	u := &utsImage{file: utsName(id), e: &utsns.UtsnsEntry{}}
	if err := dir.ReadOne(u.file, u.e); err != nil {
		return nil, err
	}
	for _, s := range []string{u.e.GetNodename(), u.e.GetDomainname()} {
		if len(s) > 64 {
			return nil, fmt.Errorf("image %s: name of %d bytes, at most 64: %w", u.file, len(s), ErrBadImage)
		}
	}
	return u, nil
}

func (u *utsImage) restore(pid int) error {
	err := linux.InNamespace(pid, unix.CLONE_NEWUTS, func() error {
		if err := unix.Sethostname([]byte(u.e.GetNodename())); err != nil {
			return os.NewSyscallError("sethostname", err)
		}
		return os.NewSyscallError("setdomainname", unix.Setdomainname([]byte(u.e.GetDomainname())))
	})
	if err != nil {
		return fmt.Errorf("restore the uts namespace of %s in pid %d: %w", u.file, pid, err)
	}
	return nil
}
