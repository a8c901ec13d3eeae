package ns

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strconv"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pidns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/ptrace"
)

// External pid namespaces, as criu 4.2 does them: `dump --external
// pid[INO]:KEY` takes a root that is not the init of its pid namespace
// INO (a runtime's, which keeps that namespace and its init), writes
// pidns-ID.img with KEY only, and the images' pids are that namespace's;
// `restore --inherit-fd fd[N]:KEY` gives the namespace back (N open on
// it, e.g. /proc/INIT/ns/pid): the puppet joins it before the root is
// cloned, so the root and its children are born in it with their pids.
// criu refuses --join-ns pid, and so does stasis.

var extPidArg = regexp.MustCompile(`^pid\[([0-9]+)\]:(.+)$`)

func pidnsName(id uint32) string { return fmt.Sprintf("pidns-%d.img", id) }

// externalPidKey is the key an --external pid[INO]:KEY value of ext
// gives pid namespace ino, "" if none does.
func externalPidKey(ext []string, ino uint64) string {
	for _, e := range ext {
		if m := extPidArg.FindStringSubmatch(e); m != nil && m[1] == strconv.FormatUint(ino, 10) {
			return m[2]
		}
	}
	return ""
}

// writePidExt writes the key of the root's external pid namespace.
func (d *Dumper) writePidExt() error {
	if d.pidExtKey == "" {
		return nil
	}
	return d.dir.Write(pidnsName(d.ids.id(kPid, d.rootIn[kPid])), &pidns.PidnsEntry{ExtKey: proto.String(d.pidExtKey)})
}

// readPidExt reads the key of pid namespace id when the images say it is
// external; criu writes no pidns image for a namespace of its own.
func readPidExt(dir *images.Dir, id uint32) (string, error) {
	if dir == nil {
		return "", nil // a caller that reads no images (tests)
	}
	e := &pidns.PidnsEntry{}
	if err := dir.ReadOne(pidnsName(id), e); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", err
	}
	return e.GetExtKey(), nil
}

// LoadPid finds the --inherit-fd fd of the external pid namespace of the
// images, if they have one, and refuses a restore without it, naming the
// key, before anything is created. inherit are the --inherit-fd fds by
// key; pidNS is --pidns, which cannot put the tree in two namespaces.
func (r *Restorer) LoadPid(inherit map[string]int, pidNS bool) error {
	key := r.pidExtKey
	if key == "" {
		return nil
	}
	if pidNS {
		return fmt.Errorf("restore --pidns: the images' pid namespace is external (key %q): the tree goes back into it, not into a new one: %w", key, ErrNotSupported)
	}
	fd, ok := inherit[key]
	if !ok {
		return fmt.Errorf("restore: the pid namespace of the images is external, key %q: give it with --inherit-fd fd[N]:%s (N open on /proc/INIT/ns/pid): %w", key, key, ErrMissingKey)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		return fmt.Errorf("restore: --inherit-fd fd[%d]:%s: not a namespace file (%v)", fd, key, err)
	}
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil || typ != unix.CLONE_NEWPID {
		return fmt.Errorf("restore: --inherit-fd fd[%d]:%s: not a pid namespace (%v)", fd, key, err)
	}
	r.pidJoin = os.NewFile(uintptr(fd), key)
	return nil
}

// JoinPid puts task t (the puppet the root is cloned from) into the
// external pid namespace of the images for its children, if any;
// channelFd is stasis' pidfd in t, to pass the namespace file through.
func (r *Restorer) JoinPid(t *ptrace.Task, channelFd int) error {
	if r.pidJoin == nil {
		return nil
	}
	fd, err := t.Call("pidfd_getfd", unix.SYS_PIDFD_GETFD, uint64(channelFd), uint64(r.pidJoin.Fd()), 0)
	if err != nil {
		return fmt.Errorf("join pid namespace %s: %w", r.pidJoin.Name(), err)
	}
	_, err = t.Call("setns", unix.SYS_SETNS, fd, unix.CLONE_NEWPID)
	if _, cerr := t.Call("close", unix.SYS_CLOSE, fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("join pid namespace %s: %w", r.pidJoin.Name(), err)
	}
	return nil
}
