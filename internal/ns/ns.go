package ns

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timens"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mount"
	"github.com/stasis-cr/stasis/internal/netns"
	"github.com/stasis-cr/stasis/internal/proc"
	"github.com/stasis-cr/stasis/internal/remote"
)

// Dumper collects the namespaces of a tree being dumped and writes the
// images of each namespace once. Pids are stasis' (host) pids.
type Dumper struct {
	self   inodes // stasis' own namespaces
	ids    idTable
	root   int    // host pid of the dumped root
	rootIn inodes // its namespaces
	tasks  map[int]inodes
	// forChildren: processes whose children are born in a child's pid
	// namespace, and that child (host pids).
	forChildren map[int]int
	pids        pidTable
	pidExtKey   string // --external pid[INO]:KEY of the root's (pidext.go)
	written     bool
	clocks      *timens.TimensEntry // of the root's time namespace, read when it was frozen
	// MountOpts are the dump's options about mounts (external ones);
	// mounts is the root's mount namespace when it has its own.
	MountOpts mount.DumpOptions
	mounts    *mount.Tree
	nestedMnt map[uint64]*nestedMnt // mntnest.go
	dir       *images.Dir
	// Net are the options of the network namespace's dump (net.go).
	Net netns.Options
	Log *slog.Logger
	// MemOnly: a pre-dump, which saves pages only: the mount tree and the
	// network namespace are neither read nor checked (as in criu; runc
	// sends no ext_mnt with a PRE_DUMP).
	MemOnly bool
}

// NewDumper starts the bookkeeping with stasis' own namespaces, which
// take the first ids as in criu.
func NewDumper() *Dumper {
	self, _ := readInodes(0) // a kind this kernel lacks stays 0
	d := &Dumper{self: self, tasks: map[int]inodes{}, forChildren: map[int]int{}}
	d.pids.flat = d.flatPid
	d.pids.forChildren = func(pid int) int { return d.forChildren[pid] }
	for i := range kinds {
		d.ids.id(i, self[i])
	}
	return d
}

// Check reads the namespaces of process pid and refuses those stasis
// cannot restore, naming the kind: a kind it does not do yet, a uts or
// ipc namespace other than the root's (as in criu), a pid namespace
// whose init is not the dumped root. The root is checked first.
func (d *Dumper) Check(pid int, root bool) error {
	in, err := readInodes(pid)
	if err != nil {
		return err
	}
	if root {
		d.root, d.rootIn = pid, in
		// Every --external value is in Net.External (internal/dump).
		if in[kPid] != d.self[kPid] {
			d.pidExtKey = externalPidKey(d.Net.External, in[kPid])
		}
		if err := d.pids.setRoot(pid, in[kPid] != d.self[kPid], in[kPid], d.pidExtKey != ""); err != nil {
			return err
		}
		if in[kMnt] != d.self[kMnt] && !d.MemOnly {
			if d.mounts, err = mount.Read(pid, d.MountOpts); err != nil {
				return err
			}
		}
	}
	for i, k := range kinds {
		if in[i] == d.self[i] && in[i] == d.rootIn[i] {
			continue
		}
		if !k.supported {
			return fmt.Errorf("pid %d is in another %s namespace than stasis: %s namespaces are %w yet", pid, k.title, k.title, ErrNotSupported)
		}
		if i == kMnt && in[i] != d.rootIn[i] {
			if err := d.checkNestedMnt(pid, in[i]); err != nil {
				return err
			}
			continue
		}
		if i != kPid && in[i] != d.rootIn[i] {
			return fmt.Errorf("pid %d is in another %s namespace than the dumped root (pid %d): %s namespaces nested inside the tree are %w yet",
				pid, k.title, d.root, k.title, ErrNotSupported)
		}
	}
	if err := checkTimeForChildren(pid, in[kTime]); err != nil {
		return err
	}
	if root && in[kTime] != d.self[kTime] {
		if d.clocks, err = readTimeNS(pid); err != nil {
			return err
		}
	}
	if root && !d.MemOnly {
		// After the clocks: the time the check takes is no jump.
		if err := d.checkNet(); err != nil {
			return err
		}
	}
	d.tasks[pid] = in
	child, err := pidForChildren(pid, in[kPid])
	if err != nil {
		return err
	}
	if child != 0 {
		d.forChildren[pid] = child
	}
	return d.pids.check(pid)
}

// pidForChildren returns the child whose pid namespace the children of
// pid are born in (the parent `unshare --pid --fork` leaves), 0 if it is
// pid's own. It refuses a process that called unshare(CLONE_NEWPID) and
// has not forked the new namespace's init: the restore makes a pid
// namespace only with its init.
func pidForChildren(pid int, own uint64) (int, error) {
	var st unix.Stat_t
	err := unix.Stat(fmt.Sprintf("/proc/%d/ns/pid_for_children", pid), &st)
	if errors.Is(err, unix.ENOENT) {
		// The kernel shows no link for a namespace that has no init yet.
		return 0, fmt.Errorf("pid %d unshared a pid namespace and has not forked its init yet: a pid namespace without its init is %w yet", pid, ErrNotSupported)
	}
	if err != nil || st.Ino == own {
		return 0, nil
	}
	kids, err := proc.Children(pid, pid)
	if err != nil {
		return 0, err
	}
	for _, k := range kids {
		var ks unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/pid", k), &ks) == nil && ks.Ino == st.Ino {
			return k, nil
		}
	}
	return 0, fmt.Errorf("pid %d unshared a pid namespace whose init is not its child: a pid namespace without its init is %w yet", pid, ErrNotSupported)
}

// flatPid tells whether process pid is known to be in stasis' pid
// namespace: Check has seen it.
func (d *Dumper) flatPid(pid int) bool {
	in, ok := d.tasks[pid]
	return ok && in[kPid] == d.self[kPid]
}

// Mounts is the mount namespace of the dumped root when it has its own,
// nil otherwise: its files are named as it sees them.
func (d *Dumper) Mounts() *mount.Tree { return d.mounts }

// SetIDs fills the namespace ids of the ids image of process pid, which
// Check has seen.
func (d *Dumper) SetIDs(pid int, e *criucore.TaskKobjIdsEntry) {
	d.ids.setIDs(e, d.tasks[pid])
}

// RootIDs fills the namespace ids of inventory root_ids: stasis' own.
func (d *Dumper) RootIDs(e *criucore.TaskKobjIdsEntry) {
	d.ids.setIDs(e, d.self)
}

// ImagePid is the pid that the images give host pid (or tid) pid: the one
// the dumped root's pid namespace sees.
func (d *Dumper) ImagePid(pid int) int { return d.pids.imagePid(pid) }

// ThreadPid is ImagePid for thread tid of process pid.
func (d *Dumper) ThreadPid(pid, tid int) int {
	if d.pids.level == 0 && d.flatPid(pid) {
		return tid
	}
	return d.pids.imagePid(tid)
}

// Pstree turns a pstree entry written with host pids into the images'
// (pids of the root's pid namespace, inner levels in the extension).
func (d *Dumper) Pstree(e *pstree.PstreeEntry) error { return d.pids.pstree(e) }

// Write writes the images of each namespace of the tree that is not
// stasis' own: the root's uts and ipc namespaces (every task shares
// them). nextPages numbers pages images.
func (d *Dumper) Write(dir *images.Dir, nextPages func() int) error {
	if d.written || d.root == 0 {
		return nil
	}
	d.written = true
	if d.rootIn[kUser] != d.self[kUser] {
		if err := dumpUser(dir, d.root, d.ids.id(kUser, d.rootIn[kUser])); err != nil {
			return err
		}
	}
	if d.clocks != nil {
		if err := dir.Write(timeName(d.ids.id(kTime, d.rootIn[kTime])), d.clocks); err != nil {
			return err
		}
	}
	d.dir = dir
	if err := d.writePidExt(); err != nil {
		return err
	}
	if err := d.dumpNet(); err != nil {
		return err
	}
	if d.rootIn[kUts] != d.self[kUts] {
		if err := dumpUTS(dir, d.root, d.ids.id(kUts, d.rootIn[kUts])); err != nil {
			return err
		}
	}
	if d.rootIn[kIpc] != d.self[kIpc] {
		if err := dumpIPC(dir, d.root, d.ids.id(kIpc, d.rootIn[kIpc]), nextPages); err != nil {
			return err
		}
		if err := dumpMQueues(dir, d.root, d.ids.id(kIpc, d.rootIn[kIpc])); err != nil {
			return err
		}
	}
	if d.mounts != nil {
		if err := d.mounts.Write(dir, d.ids.id(kMnt, d.rootIn[kMnt])); err != nil {
			return err
		}
		if err := d.writeNestedMnt(dir); err != nil {
			return err
		}
	}
	return nil
}

// Task is what the restore knows of a process of the images.
type Task struct {
	Parent int                        // image pid of its parent, 0 for the root
	IDs    *criucore.TaskKobjIdsEntry // nil for a zombie: it has none
	Pstree *pstree.PstreeEntry
}

// Restorer creates the namespaces of a tree being restored: clone flags
// and set_tid arrays for each task, and the contents of the namespaces
// the root creates, filled right after it is cloned.
type Restorer struct {
	dir     *images.Dir
	root    *rtask
	tasks   map[int]*rtask
	uts     *utsImage
	ipc     *ipcImages
	user    *userImage
	time    *timeImage
	mqueues []*MQueue
	// cgroupNS: the root has a cgroup namespace of its own, which
	// internal/cgroup makes (NewCgroupNS).
	cgroupNS bool
	mnt      *mount.Image
	// nestedMnt are the mount namespaces nested in the root's, by id,
	// mntOf the one each task that makes one makes (mntnest.go).
	nestedMnt map[uint32]*rnestedMnt
	mntOf     map[int]uint32
	rootMntID uint32
	// netID is the id of the root's own network namespace, net its
	// restore (net.go); rootHost the root's host pid once cloned.
	netID    uint32
	net      *netns.Restorer
	rootHost int
	// own are the dumping tool's namespaces (inventory root_ids), taskIDs
	// each task's (nsfile.go).
	own     *criucore.TaskKobjIdsEntry
	taskIDs map[int]*criucore.TaskKobjIdsEntry
	// pidExtKey is the key of the images' external pid namespace,
	// pidJoin its --inherit-fd (pidext.go).
	pidExtKey string
	pidJoin   *os.File
}

const cloneNewPid = 0x20000000 // CLONE_NEWPID

// Load reads and checks the namespaces of every task (parents first,
// the root first) and the images of the namespaces the root is in that
// are not the dumping tool's own (inventory root_ids), before anything
// is created.
func Load(dir *images.Dir, rootIDs *criucore.TaskKobjIdsEntry, tasks []Task) (*Restorer, error) {
	r := &Restorer{dir: dir, tasks: map[int]*rtask{}, own: rootIDs, taskIDs: map[int]*criucore.TaskKobjIdsEntry{}}
	var rootTaskIDs *criucore.TaskKobjIdsEntry
	for i, tk := range tasks {
		var parent *rtask
		if i > 0 {
			if parent = r.tasks[tk.Parent]; parent == nil {
				return nil, fmt.Errorf("image pstree.img: pid %d: parent %d not listed before it: %w", tk.Pstree.GetPid(), tk.Parent, ErrBadImage)
			}
		}
		t, err := loadPids(tk.Pstree, parent)
		if err != nil {
			return nil, fmt.Errorf("image pstree.img: %w: %w", ErrBadImage, err)
		}
		r.tasks[t.pid] = t
		r.taskIDs[t.pid] = tk.IDs
		if i == 0 {
			r.root, rootTaskIDs = t, tk.IDs
			if t.depth() != 0 {
				return nil, fmt.Errorf("image pstree.img: the root %d has nested pids: %w", t.pid, ErrBadImage)
			}
			if err := r.rootNamespaces(rootIDs, tk.IDs); err != nil {
				return nil, err
			}
			continue
		}
		if tk.IDs == nil || rootTaskIDs == nil {
			continue
		}
		for k, kd := range kinds {
			if k == kPid {
				continue
			}
			if k == kMnt {
				pids := r.taskIDs[tk.Parent]
				if pids == nil {
					pids = rootTaskIDs // a helper's or zombie's: none of their own
				}
				if err := r.loadNestedMnt(t, nsID(tk.IDs, k), nsID(pids, k)); err != nil {
					return nil, err
				}
				continue
			}
			if id := nsID(tk.IDs, k); id != 0 && id != nsID(rootTaskIDs, k) {
				return nil, fmt.Errorf("image ids-%d.img: pid %d is in another %s namespace than the root: %s namespaces nested inside the tree are %w yet",
					t.pid, t.pid, kd.title, kd.title, ErrNotSupported)
			}
		}
	}
	return r, nil
}

// rootNamespaces finds the kinds of namespace the root is in that are
// not those of the dumping tool (criu's root_ns_mask) and reads their
// images.
func (r *Restorer) rootNamespaces(own, root *criucore.TaskKobjIdsEntry) error {
	if own == nil || root == nil {
		return nil
	}
	for k, kd := range kinds {
		id := nsID(root, k)
		if id == 0 || id == nsID(own, k) {
			continue
		}
		if !kd.supported {
			return fmt.Errorf("image ids-%d.img: the root is in a %s namespace of its own: restoring %s namespaces is %w yet", r.root.pid, kd.title, kd.title, ErrNotSupported)
		}
		if k == kCgroup {
			r.cgroupNS = true
			continue
		}
		if k == kPid {
			key, err := readPidExt(r.dir, id)
			if err != nil {
				return err
			}
			if r.pidExtKey = key; key != "" {
				continue // joined, not made: LoadPid
			}
		}
		r.root.flags |= kd.flag
		var err error
		switch k {
		case kPid:
			if r.root.pid != 1 {
				return fmt.Errorf("image pstree.img: the root starts a pid namespace but is pid %d, not 1: %w", r.root.pid, ErrBadImage)
			}
		case kUts:
			r.uts, err = readUTS(r.dir, id)
		case kIpc:
			if r.ipc, err = readIPC(r.dir, id); err == nil {
				r.mqueues, err = readMQueues(r.dir, id)
			}
		case kUser:
			r.user, err = readUser(r.dir, id)
		case kTime:
			r.time, err = readTime(r.dir, id)
		case kNet:
			r.netID = id
		case kMnt:
			r.rootMntID = id
			r.mnt, err = mount.Load(r.dir, id)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// NewUserNS tells whether the root starts a user namespace: its tasks
// cannot reach into stasis (pidfd_getfd).
func (r *Restorer) NewUserNS() bool { return r.user != nil }

// NewCgroupNS tells whether the root has a cgroup namespace of its own:
// internal/cgroup has it unshare one from the namespace's root cgroup.
func (r *Restorer) NewCgroupNS() bool { return r.cgroupNS }

// NewPidNS tells whether the root starts or joins a pid namespace: the pids of the
// images are that namespace's, not the host's.
func (r *Restorer) NewPidNS() bool { return r.root.flags&cloneNewPid != 0 || r.pidExtKey != "" }

// Clone returns clone3's set_tid (innermost pid first) and the namespace
// flags that create process pid. A pid the images do not list (a helper)
// is the images' pid alone.
func (r *Restorer) Clone(pid int) ([]int, uint64) {
	t := r.tasks[pid]
	if t == nil {
		return []int{pid}, 0
	}
	// The time namespace is the puppet's time_for_children (BeforeRoot):
	// clone(CLONE_NEWTIME) would freeze a new one's offsets at zero.
	return setTid(t.levels), t.flags &^ unix.CLONE_NEWTIME
}

// BeforeRoot prepares, in the task the root is cloned from (the puppet,
// host pid host), the namespaces a clone cannot make with their state:
// the time namespace with its offsets.
func (r *Restorer) BeforeRoot(puppet Caller, host int) error {
	if r.time == nil {
		return nil
	}
	return r.time.restore(puppet, host)
}

// ChildCreated gives parent (process pid) back the pid namespace its
// children were born in, once its child child is made: the child's, as
// `unshare --pid --fork` leaves its parent (setns on a pidfd of the child
// with CLONE_NEWPID sets pid_for_children to the child's namespace).
func (r *Restorer) ChildCreated(parent remote.Task, pid, child int) error {
	t := r.tasks[pid]
	if t == nil || t.forChildren != child {
		return nil
	}
	local := r.LocalPid(pid, child)
	fd, err := parent.Call("pidfd_open", unix.SYS_PIDFD_OPEN, uint64(local), 0)
	if err != nil {
		return fmt.Errorf("pid %d: pid namespace of its child %d for its children: %w", pid, child, err)
	}
	_, err = parent.Call("setns", unix.SYS_SETNS, fd, unix.CLONE_NEWPID)
	if _, cerr := parent.Call("close", unix.SYS_CLOSE, fd); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pid %d: pid namespace of its child %d for its children: %w", pid, child, err)
	}
	return nil
}

// ThreadTid is set_tid for thread i (pstree order) of process pid, whose
// tid in the images is tid.
func (r *Restorer) ThreadTid(pid, i, tid int) []int {
	t := r.tasks[pid]
	if t == nil || i >= len(t.tids) {
		return []int{tid}
	}
	return setTid(t.tids[i])
}

// LocalPid is image pid pid as process viewer's pid namespace sees it, 0
// if it does not (a group inherited from outside a nested namespace).
func (r *Restorer) LocalPid(viewer, pid int) int {
	v, t := r.tasks[viewer], r.tasks[pid]
	if v == nil || v.depth() == 0 {
		return pid
	}
	if t == nil || t.depth() < v.depth() {
		return 0
	}
	return t.levels[v.depth()]
}

// Created fills the namespaces that the clone of process pid (host pid
// host) created: the root's uts and ipc namespaces. It runs before any
// task maps a System V segment.
func (r *Restorer) Created(pid, host int) error {
	if pid != r.root.pid {
		return nil
	}
	// The maps first: the other namespaces of the clone are owned by the
	// user namespace, and nothing of the task may run before its ids mean
	// what they meant.
	if r.user != nil {
		if err := r.user.restore(host); err != nil {
			return err
		}
	}
	r.rootHost = host
	if err := r.net.Fill(host); err != nil {
		return err
	}
	if r.uts != nil {
		if err := r.uts.restore(host); err != nil {
			return err
		}
	}
	if r.ipc != nil {
		if err := r.ipc.restore(r.dir, host); err != nil {
			return err
		}
	}
	return restoreMQueues(host, r.mqueues)
}

// PrepareMounts resolves the restore's options about mounts (--root,
// external mounts) against the images' mount namespace and refuses a
// missing one, before any task is created.
func (r *Restorer) PrepareMounts(opts mount.RestoreOptions) error {
	if r.mnt == nil {
		if opts.Root != "" {
			return fmt.Errorf("restore --root %s: the images have no mount namespace of their own to put there: %w", opts.Root, ErrNotSupported)
		}
		return nil
	}
	if err := r.mnt.Prepare(opts); err != nil {
		return err
	}
	return r.prepareNestedMnt(opts)
}

// Mount builds the mount tree in the new mount namespace of the root
// task t (cloned, not run yet) and makes it its root. Nothing to do when
// the images have no mount namespace of their own.
func (r *Restorer) Mount(t remote.Task) error {
	if r.mnt == nil {
		return nil
	}
	if t.Pid() != r.root.pid {
		return r.mountNested(t)
	}
	return r.mnt.Build(t)
}

// MountRoot is where stasis reaches the root of the restored mount
// namespace (the root task's root through /proc), "" if the tree has
// none of its own: paths of its files are resolved there.
func (r *Restorer) MountRoot(host int) string {
	if r.mnt == nil {
		return ""
	}
	return fmt.Sprintf("/proc/%d/root", host)
}

// NewKinds names the kinds of namespace the restore creates ("pid",
// "uts", "ipc"), none when the tree lives in the restoring tool's own.
func (r *Restorer) NewKinds() []string {
	var out []string
	for _, k := range kinds {
		if r.root.flags&k.flag != 0 || k.flag == unix.CLONE_NEWCGROUP && r.cgroupNS {
			out = append(out, k.title)
		}
	}
	return out
}
