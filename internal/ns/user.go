package ns

import (
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/userns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/proc"
)

// User namespace: uid and gid maps (userns-ID.img, as criu writes them:
// the ids outside are global ids, what /proc shows from the initial user
// namespace) and setgroups. criu has no field for setgroups and restores
// every namespace with "allow"; stasis keeps "deny" in an extension field
// of the entry, which criu and crit skip as unknown:
//
//	optional bool setgroups_deny = 100;
//
// The restore creates the user namespace with the root's clone (the kernel
// makes it first, so the other namespaces of the same clone are owned by
// it) and writes setgroups and the maps from stasis before the task runs.
const fieldSetgroupsDeny = 100

func userName(id uint32) string { return fmt.Sprintf("userns-%d.img", id) }

func dumpUser(dir *images.Dir, pid int, id uint32) error {
	e := &userns.UsernsEntry{}
	for _, m := range []struct {
		file string
		dst  *[]*userns.UidGidExtent
	}{{"uid_map", &e.UidMap}, {"gid_map", &e.GidMap}} {
		ext, err := proc.ReadIDMap(pid, m.file)
		if err != nil {
			return fmt.Errorf("user namespace of pid %d: %w", pid, err)
		}
		for _, x := range ext {
			*m.dst = append(*m.dst, &userns.UidGidExtent{First: proto.Uint32(x.First), LowerFirst: proto.Uint32(x.Lower), Count: proto.Uint32(x.Count)})
		}
	}
	sg, err := os.ReadFile(fmt.Sprintf("/proc/%d/setgroups", pid))
	if err != nil {
		return fmt.Errorf("user namespace of pid %d: %w", pid, err)
	}
	if strings.TrimSpace(string(sg)) == "deny" {
		b := protowire.AppendTag(nil, fieldSetgroupsDeny, protowire.VarintType)
		e.ProtoReflect().SetUnknown(protowire.AppendVarint(b, 1))
	}
	return dir.Write(userName(id), e)
}

type userImage struct {
	file       string
	uids, gids []*userns.UidGidExtent
	deny       bool
}

func readUser(dir *images.Dir, id uint32) (*userImage, error) {
	u := &userImage{file: userName(id)}
	e := &userns.UsernsEntry{}
	if err := dir.ReadOne(u.file, e); err != nil {
		return nil, err
	}
	u.uids, u.gids = e.GetUidMap(), e.GetGidMap()
	for _, m := range [][]*userns.UidGidExtent{u.uids, u.gids} {
		if len(m) == 0 || len(m) > 340 { // the kernel's limit of extents
			return nil, fmt.Errorf("image %s: a map of %d extents: %w", u.file, len(m), ErrBadImage)
		}
	}
	b := e.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("image %s: %w: %w", u.file, ErrBadImage, protowire.ParseError(n))
		}
		b = b[n:]
		if num == fieldSetgroupsDeny && typ == protowire.VarintType {
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return nil, fmt.Errorf("image %s: %w: %w", u.file, ErrBadImage, protowire.ParseError(m))
			}
			u.deny = v != 0
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil, fmt.Errorf("image %s: %w: %w", u.file, ErrBadImage, protowire.ParseError(m))
		}
		b = b[m:]
	}
	return u, nil
}

func formatMap(m []*userns.UidGidExtent) string {
	var sb strings.Builder
	for _, e := range m {
		fmt.Fprintf(&sb, "%d %d %d\n", e.GetFirst(), e.GetLowerFirst(), e.GetCount())
	}
	return sb.String()
}

// restore gives the new user namespace of process host its setgroups and
// maps: setgroups before gid_map (the kernel takes "deny" only while no gid
// map is written), each map in one write.
func (u *userImage) restore(host int) error {
	steps := []struct{ file, text string }{
		{"uid_map", formatMap(u.uids)},
		{"gid_map", formatMap(u.gids)},
	}
	if u.deny {
		steps = append([]struct{ file, text string }{{"setgroups", "deny"}}, steps...)
	}
	for _, s := range steps {
		p := fmt.Sprintf("/proc/%d/%s", host, s.file)
		if err := os.WriteFile(p, []byte(s.text), 0); err != nil {
			return fmt.Errorf("restore the user namespace of %s in pid %d: %s %q: %w", u.file, host, s.file, s.text, err)
		}
	}
	return nil
}

// asNSRoot runs fn on the calling thread (locked, inside a namespace
// owned by the user namespace of pid) with its effective uid that
// namespace's root's: the ipc sysctls of a namespace owned by another user
// namespace are writable by its root only (ipc_permissions), not by the
// initial namespace's root. Only this thread changes (a raw setresuid,
// not Go's, which changes every thread); its capabilities come back with
// uid 0 after.
func asNSRoot(pid int, fn func() error) error {
	var ns unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/user", pid), &ns); err != nil {
		return err
	}
	var self unix.Stat_t
	if unix.Stat("/proc/self/ns/user", &self) == nil && self.Ino == ns.Ino {
		return fn()
	}
	m, err := proc.ReadIDMap(pid, "uid_map")
	if err != nil {
		return err
	}
	root := ^uint32(0)
	for _, e := range m {
		if e.First == 0 {
			root = e.Lower
		}
	}
	if root == ^uint32(0) || root == 0 {
		return fn()
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(root), ^uintptr(0)); e != 0 {
		return fmt.Errorf("take uid %d, the root of the user namespace of pid %d: %w", root, pid, os.NewSyscallError("setresuid", e))
	}
	err = fn()
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 && err == nil {
		err = fmt.Errorf("give uid %d back: %w", root, os.NewSyscallError("setresuid", e))
	}
	return err
}
