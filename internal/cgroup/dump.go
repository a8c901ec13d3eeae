package cgroup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	cgpb "github.com/checkpoint-restore/go-criu/v8/crit/images/cgroup"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/linux"
)

// DumpOptions are criu's cgroup options of a dump.
type DumpOptions struct {
	// Mode (--manage-cgroups): ModeIgnore records each task's cgroups
	// but not the cgroups themselves; any other mode records both.
	Mode Mode
	// Props and PropsFile (--cgroup-props, --cgroup-props-file): the
	// properties to dump per controller, in criu's format.
	Props, PropsFile string
	// Controllers (--cgroup-dump-controller): when set, only these
	// controllers' hierarchies are recorded.
	Controllers []string
	// Yard (--cgroup-yard): a directory with every hierarchy mounted in
	// it, instead of stasis' detached mounts of them.
	Yard string
	// Roots (--cgroup-root): the cgroup whose tree is recorded for a
	// controller, instead of the tasks' own.
	Roots []Root
	// FreezeCgroup (--freeze-cgroup): the cgroup the tree was frozen
	// through; a v1 freezer records its state before the freeze.
	FreezeCgroup string
	// Off: no cgroup at all (criu's --unprivileged: no CAP_SYS_ADMIN to
	// mount a hierarchy).
	Off bool
	Log *slog.Logger
}

type set struct {
	id uint32
	ms []member
}

func (s *set) equal(ms []member) bool {
	if len(s.ms) != len(ms) {
		return false
	}
	for i := range ms {
		if s.ms[i] != ms[i] {
			return false
		}
	}
	return true
}

// dirNode is one cgroup directory recorded, with its subtree.
type dirNode struct {
	path     string // in its hierarchy, "/" for the root
	e        *cgpb.CgroupDirEntry
	children []*dirNode
}

// ctrl is one hierarchy as cgroup.img lists it.
type ctrl struct {
	cnames   []string
	heads    []*dirNode
	threaded bool
}

// Dumper records the cgroups of the tasks of a dump and writes
// cgroup.img, as criu: each distinct combination of cgroups a task or
// thread is in is a set (stasis' own first, inventory's root_cg_set);
// for each set met, the tree of each of its cgroups with the properties
// of every directory.
type Dumper struct {
	opts     DumpOptions
	props    propTable
	hs       hierarchies
	sets     []*set
	self     *set
	root     *set
	selfByNm map[string]string // stasis' own cgroup per hierarchy
	ctrls    []*ctrl
	cgns     bool              // the root is in a cgroup namespace of its own
	prefix   map[string]uint32 // the root's cgns_prefix per hierarchy
	freezer  string            // freezer.state before --freeze-cgroup froze it
	log      *slog.Logger
}

// NewDumper starts with stasis' own cgroups, set 1.
func NewDumper(opts DumpOptions) (*Dumper, error) {
	d := &Dumper{opts: opts, hs: hierarchies{yard: opts.Yard}, log: opts.Log, selfByNm: map[string]string{}}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if opts.Off {
		return d, nil
	}
	var err error
	if d.props, err = newPropTable(opts.Props, opts.PropsFile); err != nil {
		return nil, err
	}
	ms, err := readMembers(0, 0, d.skip)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		d.selfByNm[m.name] = m.path
		if !strings.HasPrefix(m.name, "name=") {
			d.ctrls = append(d.ctrls, &ctrl{cnames: controllerNames(m.name), threaded: m.name != ""})
		}
	}
	d.self = &set{id: 1, ms: ms}
	d.sets = []*set{d.self}
	return d, nil
}

// skip tells whether hierarchy name is left out by --cgroup-dump-controller.
func (d *Dumper) skip(name string) bool {
	if len(d.opts.Controllers) == 0 {
		return false
	}
	for _, c := range d.opts.Controllers {
		if contains(controllerNames(c), name) || c == name {
			return false
		}
	}
	return true
}

// SetFreezerState records the freezer state of the cgroup of
// --freeze-cgroup before the dump froze it.
func (d *Dumper) SetFreezerState(s string) { d.freezer = s }

// Threads returns the set of each thread of process pid (host ids,
// tids[0] its leader; root: pid is the root, whose leader comes first of
// all), zeros when cgroups are off. The /proc/PID/task/TID/cgroup files
// are read on a few goroutines: a process of 10,000 threads has as many.
func (d *Dumper) Threads(pid int, tids []int, root bool) ([]uint32, error) {
	ids := make([]uint32, len(tids))
	if d.opts.Off {
		return ids, nil
	}
	mss := make([][]member, len(tids))
	errs := make([]error, len(tids))
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := min(runtime.GOMAXPROCS(0), len(tids)); w > 0; w-- {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < len(tids); i = int(next.Add(1) - 1) {
				mss[i], errs[i] = readMembers(pid, tids[i], d.skip)
			}
		}()
	}
	wg.Wait()
	for i, tid := range tids {
		if errs[i] != nil {
			return nil, errs[i]
		}
		id, err := d.threadSet(pid, tid, root && i == 0, mss[i])
		if err != nil {
			return nil, err
		}
		ids[i] = id
	}
	return ids, nil
}

// threadSet returns the set of a thread whose members are ms.
func (d *Dumper) threadSet(pid, tid int, root bool, ms []member) (uint32, error) {
	if root && d.root == nil {
		if err := d.rootPrefix(pid, tid, ms); err != nil {
			return 0, err
		}
	}
	for i := range ms {
		if p, ok := d.prefix[ms[i].name]; ok && uint32(len(ms[i].path)) >= p {
			ms[i].prefix = p
		}
	}
	for _, s := range d.sets {
		if s.equal(ms) {
			if root && d.root == nil {
				d.root = s
			}
			return s.id, nil
		}
	}
	s := &set{id: uint32(len(d.sets) + 1), ms: ms}
	if err := d.collect(s); err != nil {
		return 0, err
	}
	d.sets = append(d.sets, s)
	if root && d.root == nil {
		d.root = s
	}
	return s.id, nil
}

// rootPrefix finds the root of the root's cgroup namespace, if it has
// one of its own, in each hierarchy (criu's cgns_prefix: the length of
// the host path that the namespace sees as "/"), from the paths a thread
// inside that namespace reads for it.
func (d *Dumper) rootPrefix(pid, tid int, host []member) error {
	var own, other unix.Stat_t
	if err := unix.Stat("/proc/self/ns/cgroup", &own); err != nil {
		return nil // no cgroup namespaces on this kernel
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/cgroup", pid), &other); err != nil {
		return fmt.Errorf("cgroup namespace of pid %d: %w", pid, err)
	}
	if own.Ino == other.Ino && own.Dev == other.Dev {
		return nil
	}
	d.cgns = true
	var inside []member
	err := linux.InNamespace(pid, unix.CLONE_NEWCGROUP, func() error {
		var err error
		inside, err = readMembers(pid, tid, d.skip)
		return err
	})
	if err != nil {
		return err
	}
	d.prefix = map[string]uint32{}
	for _, h := range host {
		for _, in := range inside {
			if in.name != h.name {
				continue
			}
			rel := in.path
			if rel == "/" {
				rel = ""
			}
			if !strings.HasSuffix(h.path, rel) || h.path == "/" {
				continue
			}
			if n := len(h.path) - len(rel); n > 1 {
				d.prefix[h.name] = uint32(n)
			}
		}
	}
	return nil
}

// collect records the cgroup trees of a new set.
func (d *Dumper) collect(s *set) error {
	for _, m := range s.ms {
		c := d.ctrlOf(m.name)
		if c == nil {
			if !strings.HasPrefix(m.name, "name=") {
				return fmt.Errorf("cgroup hierarchy %q of a task is not one of stasis' own: %w", m.name, ErrNotSupported)
			}
			c = &ctrl{cnames: []string{m.name}, threaded: true}
			d.ctrls = append(d.ctrls, c)
		}
		if d.opts.Mode == ModeIgnore {
			continue
		}
		h, err := d.hs.get(c.cnames)
		if err != nil {
			return err
		}
		top := m.path
		for _, r := range d.opts.Roots {
			if r.Global || contains(controllerNames(r.Controller), m.name) {
				top = r.Path
			}
		}
		// Below stasis' own cgroup is not the tree's (a task that shares
		// it, as at "/" of a hierarchy nobody uses, records that cgroup
		// alone).
		deep := top != d.selfByNm[m.name]
		if err := d.walk(c, h, path.Clean(top), deep); err != nil {
			return err
		}
		if d.opts.FreezeCgroup != "" && d.freezer != "" && hasString(c.cnames, "freezer") && len(c.heads) > 0 {
			h := c.heads[0].e
			if !hasProp(h, "freezer.state") {
				h.Properties = append(h.Properties, &cgpb.CgroupPropEntry{Name: proto.String("freezer.state"), Value: proto.String(d.freezer)})
			}
		}
	}
	return nil
}

func hasProp(e *cgpb.CgroupDirEntry, name string) bool {
	for _, p := range e.Properties {
		if p.GetName() == name {
			return true
		}
	}
	return false
}

func (d *Dumper) ctrlOf(name string) *ctrl {
	for _, c := range d.ctrls {
		if contains(c.cnames, name) {
			return c
		}
	}
	return nil
}

// walk records cgroup p of hierarchy h and, if deep, its subtree.
// Directories that vanish meanwhile are skipped: other cgroups of the
// host come and go.
func (d *Dumper) walk(c *ctrl, h *hierarchy, p string, deep bool) error {
	n, parent, exists := findDir(c.heads, p)
	if !exists {
		st, err := os.Stat(h.path(p))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("cgroup %s of %s: %w", p, yardName(c.cnames), err)
		}
		n = &dirNode{path: p, e: &cgpb.CgroupDirEntry{DirPerms: perms(st)}}
		if err := d.dirProps(c, h, n); err != nil {
			return err
		}
		if parent != nil {
			n.e.DirName = proto.String(strings.TrimPrefix(strings.TrimPrefix(p, parent.path), "/"))
			parent.children = append(parent.children, n)
		} else {
			n.e.DirName = proto.String(strings.TrimPrefix(p, "/"))
			c.heads = append(c.heads, n)
		}
	}
	if !deep {
		return nil
	}
	ents, err := os.ReadDir(h.path(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cgroup %s of %s: %w", p, yardName(c.cnames), err)
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := d.walk(c, h, path.Join(p, e.Name()), true); err != nil {
				return err
			}
		}
	}
	return nil
}

// findDir finds p among the recorded trees: itself, or the deepest
// recorded ancestor it goes under.
func findDir(nodes []*dirNode, p string) (found, parent *dirNode, exact bool) {
	for _, n := range nodes {
		if n.path == p {
			return n, nil, true
		}
		if under(p, n.path) {
			f, par, ex := findDir(n.children, p)
			if ex {
				return f, par, true
			}
			if par == nil {
				par = n
			}
			return nil, par, false
		}
	}
	return nil, nil, false
}

// under tells whether cgroup p is below cgroup dir.
func under(p, dir string) bool {
	if dir == "/" {
		return p != "/"
	}
	return strings.HasPrefix(p, dir+"/")
}

func perms(st os.FileInfo) *cgpb.CgroupPerms {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return &cgpb.CgroupPerms{Mode: proto.Uint32(s.Mode), Uid: proto.Uint32(s.Uid), Gid: proto.Uint32(s.Gid)}
}

// dirProps reads the properties of directory n.
func (d *Dumper) dirProps(c *ctrl, h *hierarchy, n *dirNode) error {
	var names []string
	add := func(l []string) {
		for _, p := range l {
			if !hasString(names, p) {
				names = append(names, p)
			}
		}
	}
	if h.v2 {
		if b, err := os.ReadFile(path.Join(h.path(n.path), "cgroup.controllers")); err == nil {
			for _, ctl := range strings.Fields(string(b)) {
				add(v2Props[ctl])
				add(d.props[ctl]) // --cgroup-props for a v2 controller
			}
		}
		add(globalPropsV2)
	} else {
		for _, cn := range c.cnames {
			add(d.props[cn])
			add(globalProps)
		}
	}
	for _, name := range names {
		pe, err := readProp(path.Join(h.path(n.path), name), name)
		if err != nil {
			return fmt.Errorf("cgroup %s of %s: %w", n.path, yardName(c.cnames), err)
		}
		if pe == nil {
			continue
		}
		if name == "cgroup.type" && strings.Contains(pe.GetValue(), "threaded") {
			c.threaded = true
		}
		n.e.Properties = append(n.e.Properties, pe)
	}
	return nil
}

// readProp reads one property as criu does (nil if this kernel has no
// such file): a trailing newline dropped, the largest value written -1,
// only the owner and mode of cgroup.procs and tasks.
func readProp(file, name string) (*cgpb.CgroupPropEntry, error) {
	st, err := os.Stat(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pe := &cgpb.CgroupPropEntry{Name: proto.String(name), Perms: perms(st)}
	if name == "cgroup.procs" || name == "tasks" {
		pe.Value = proto.String("")
		return pe, nil
	}
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 1023)
	k, err := f.Read(buf)
	if err != nil && !errors.Is(err, io.EOF) {
		// A file this kernel lists but cannot read here (a controller
		// half-disabled) is not a property to keep.
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	v := strings.TrimSuffix(string(buf[:k]), "\n")
	if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && n == math.MaxInt64 {
		v = "-1"
	}
	if name == "memory.oom_control" {
		var dis int
		if _, err := fmt.Sscanf(v, "oom_kill_disable %d", &dis); err != nil {
			return nil, fmt.Errorf("memory.oom_control %q: no oom_kill_disable", v)
		}
		v = strconv.Itoa(dis)
	}
	pe.Value = proto.String(v)
	return pe, nil
}

// Write writes cgroup.img, unless every task is in stasis' own cgroups
// (criu writes none then either).
func (d *Dumper) Write(dir *images.Dir) error {
	if d.opts.Off || d.root == nil || d.root == d.self && len(d.sets) == 1 {
		return nil
	}
	e := &cgpb.CgroupEntry{}
	for _, s := range d.sets[1:] {
		se := &cgpb.CgSetEntry{Id: proto.Uint32(s.id)}
		for _, m := range s.ms {
			me := &cgpb.CgMemberEntry{Name: proto.String(m.name), Path: proto.String(m.path)}
			if m.prefix > 0 {
				me.CgnsPrefix = proto.Uint32(m.prefix)
			}
			se.Ctls = append(se.Ctls, me)
		}
		e.Sets = append(e.Sets, se)
	}
	for _, c := range d.ctrls {
		ce := &cgpb.CgControllerEntry{Cnames: c.cnames, IsThreaded: proto.Bool(c.threaded)}
		for _, n := range c.heads {
			ce.Dirs = append(ce.Dirs, n.entry())
		}
		e.Controllers = append(e.Controllers, ce)
	}
	return dir.Write("cgroup.img", e)
}

func (n *dirNode) entry() *cgpb.CgroupDirEntry {
	n.e.Children = nil
	sort.SliceStable(n.children, func(i, j int) bool { return n.children[i].path < n.children[j].path })
	for _, c := range n.children {
		n.e.Children = append(n.e.Children, c.entry())
	}
	return n.e
}

// Close releases the hierarchies opened.
func (d *Dumper) Close() { d.hs.close() }
