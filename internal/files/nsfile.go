package files

import (
	"fmt"
	"os"
	"regexp"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	nsimg "github.com/checkpoint-restore/go-criu/v8/crit/images/ns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
)

// Namespace files: an fd opened on /proc/PID/ns/KIND (its link reads
// "net:[4026531840]"), kept as criu's ns_file_entry: the namespace's id
// (the one ids-PID.img gives the tasks in it), its CLONE_NEW* flag and
// the file's flags. The namespace must be one a task of the tree is in,
// or stasis' own: any other would not exist at restore (criu refuses it
// too). The restore opens the namespace of that id from a restored task
// that is in it, or the restoring stasis' own for stasis' own at dump.
// Which id a namespace has is internal/ns's: the dump and the restore
// hand it in (Table.NsID, Restorer.NsPath).

func init() {
	Register(&Kind{Name: "ns", Type: fdinfo.FdTypes_NS, Dump: dumpNsFile, Open: openNsFile})
}

// nsTarget matches the link of an fd of a namespace: "KIND:[INODE]".
var nsTarget = regexp.MustCompile(`^(net|uts|ipc|pid|mnt|user|cgroup|time):\[[0-9]+\]$`)

func dumpNsFile(t *Table, fd *Fd) (*fdinfo.FileEntry, error) {
	kind := nsTarget.FindStringSubmatch(fd.Target)
	if kind == nil || t.NsID == nil {
		return nil, &UnsupportedError{Pid: fd.Pid, Fd: fd.Num, Kind: "a namespace file", Target: fd.Target}
	}
	id, cflag, err := t.NsID(kind[1], fd.Stat.Ino)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): %w", fd, fd.Target, err)
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_NS.Enum(),
		Id:   proto.Uint32(fd.ID),
		Nsf: &nsimg.NsFileEntry{
			Id:      proto.Uint32(fd.ID),
			NsId:    proto.Uint32(id),
			NsCflag: proto.Uint32(cflag),
			Flags:   proto.Uint32(anonFlags(fd.Info)),
		},
	}, nil
}

// openNsFile opens the namespace of the entry's id again.
func openNsFile(r *Restorer, fe *fdinfo.FileEntry) (*os.File, error) {
	e := fe.GetNsf()
	if fe.GetType() != fdinfo.FdTypes_NS || e == nil {
		return nil, NotKind(fe, "a namespace file")
	}
	if r.NsPath == nil {
		return nil, fmt.Errorf("reopen file id %d: namespace %d: no namespaces in this restore: %w", fe.GetId(), e.GetNsId(), images.ErrCorrupt)
	}
	path, err := r.NsPath(e.GetNsId(), e.GetNsCflag())
	if err != nil {
		return nil, fmt.Errorf("reopen file id %d: %w", fe.GetId(), err)
	}
	fd, err := unix.Open(path, int(e.GetFlags())&unix.O_ACCMODE|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen file id %d: namespace %d: %w", fe.GetId(), e.GetNsId(), &os.PathError{Op: "open", Path: path, Err: err})
	}
	return os.NewFile(uintptr(fd), path), nil
}
