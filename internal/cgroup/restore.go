package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	cgpb "github.com/checkpoint-restore/go-criu/v8/crit/images/cgroup"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
)

// RestoreOptions are criu's cgroup options of a restore.
type RestoreOptions struct {
	Mode  Mode   // --manage-cgroups
	Roots []Root // --cgroup-root
	Yard  string // --cgroup-yard
	// Off: no cgroup is touched (criu's --unprivileged).
	Off bool
	Log *slog.Logger
}

// Caller runs a system call inside a restored task (remote.Task and
// ptrace.Task both do).
type Caller interface {
	Call(name string, nr uintptr, args ...uint64) (uint64, error)
}

// Restorer puts the cgroups of cgroup.img back and the restored tasks
// and threads into them.
type Restorer struct {
	opts    RestoreOptions
	img     *cgpb.CgroupEntry // nil: nothing to do
	rootSet uint32
	sets    map[uint32]*cgpb.CgSetEntry
	hs      hierarchies
	created []createdDir // in creation order
	later   []laterProp  // written once the tree runs
	// props are the directories whose properties are written: made by
	// this restore, or any with --manage-cgroups=props or full.
	props map[*cgpb.CgroupDirEntry]bool
	log   *slog.Logger
}

type createdDir struct {
	h *hierarchy
	p string
}

type laterProp struct {
	file, value string
}

// Load reads cgroup.img (none: the tasks stay in the restoring
// process's cgroups, as in criu) and applies --cgroup-root to it.
// rootSet is inventory's root_cg_set: the set of the dumping tool.
func Load(dir *images.Dir, rootSet uint32, opts RestoreOptions) (*Restorer, error) {
	r := &Restorer{opts: opts, rootSet: rootSet, hs: hierarchies{yard: opts.Yard}, log: opts.Log, props: map[*cgpb.CgroupDirEntry]bool{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if opts.Off || opts.Mode == ModeIgnore || !dir.Has("cgroup.img") {
		return r, nil
	}
	e := &cgpb.CgroupEntry{}
	if err := dir.ReadOne("cgroup.img", e); err != nil {
		return nil, err
	}
	r.sets = map[uint32]*cgpb.CgSetEntry{}
	for _, s := range e.GetSets() {
		if r.sets[s.GetId()] != nil {
			return nil, fmt.Errorf("image cgroup.img: set %d listed twice: %w", s.GetId(), ErrBadImage)
		}
		for _, m := range s.GetCtls() {
			if controllerOf(e, m.GetName()) == nil {
				return nil, fmt.Errorf("image cgroup.img: set %d: no controller entry for hierarchy %q: %w", s.GetId(), m.GetName(), ErrBadImage)
			}
			if !strings.HasPrefix(m.GetPath(), "/") || strings.Contains(m.GetPath(), "/../") || strings.HasSuffix(m.GetPath(), "/..") {
				return nil, fmt.Errorf("image cgroup.img: set %d: path %q of %q: %w", s.GetId(), m.GetPath(), m.GetName(), ErrBadImage)
			}
			if m.GetCgnsPrefix() > uint32(len(m.GetPath())) {
				return nil, fmt.Errorf("image cgroup.img: set %d: cgns_prefix %d longer than path %q: %w", s.GetId(), m.GetCgnsPrefix(), m.GetPath(), ErrBadImage)
			}
		}
		r.sets[s.GetId()] = s
	}
	for i, c := range e.GetControllers() {
		if len(c.GetCnames()) == 0 {
			return nil, fmt.Errorf("image cgroup.img: controller entry %d has no name: %w", i, ErrBadImage)
		}
	}
	r.img = e
	if err := r.rewriteRoots(); err != nil {
		return nil, err
	}
	return r, nil
}

func controllerOf(e *cgpb.CgroupEntry, name string) *cgpb.CgControllerEntry {
	for _, c := range e.GetControllers() {
		if contains(c.GetCnames(), name) {
			return c
		}
	}
	return nil
}

// CheckSet refuses a task whose set cgroup.img does not have.
func (r *Restorer) CheckSet(pid int, id uint32) error {
	if r.img == nil || id == 0 || id == r.rootSet || r.sets[id] != nil {
		return nil
	}
	return fmt.Errorf("image core-%d.img: cgroup set %d is not in cgroup.img: %w", pid, id, ErrBadImage)
}

// rewriteRoots moves the trees of the controllers --cgroup-root names
// under their new root, as criu: each top directory becomes the new
// root, and the paths of the sets under it follow.
func (r *Restorer) rewriteRoots() error {
	if len(r.opts.Roots) == 0 {
		return nil
	}
	for _, c := range r.img.GetControllers() {
		var newRoot string
		for _, o := range r.opts.Roots {
			if o.Global || !contains(c.GetCnames(), o.Controller) && !hasString(c.GetCnames(), o.Controller) {
				continue
			}
			if newRoot != "" && newRoot != o.Path {
				return fmt.Errorf("--cgroup-root: hierarchy %s given two roots, %s and %s: %w", yardName(c.GetCnames()), newRoot, o.Path, ErrBadOption)
			}
			newRoot = o.Path
		}
		if newRoot == "" {
			for _, o := range r.opts.Roots {
				if o.Global {
					newRoot = o.Path
				}
			}
		}
		if newRoot == "" {
			continue
		}
		for _, d := range c.GetDirs() {
			old := "/" + d.GetDirName()
			for _, s := range r.img.GetSets() {
				for _, m := range s.GetCtls() {
					if !contains(c.GetCnames(), m.GetName()) || m.GetPath() != old && !under(m.GetPath(), path.Clean(old)) {
						continue
					}
					if p := m.GetCgnsPrefix(); p > 0 {
						np := path.Clean(newRoot + m.GetPath()[p:])
						m.Path = &np
						n := uint32(len(path.Clean(newRoot)))
						m.CgnsPrefix = &n
					} else {
						np := path.Clean(newRoot + "/" + strings.TrimPrefix(m.GetPath(), path.Clean(old)))
						m.Path = &np
					}
				}
			}
			nd := strings.TrimPrefix(path.Clean(newRoot), "/")
			d.DirName = &nd
			r.log.Info("cgroup root rewritten", "hierarchy", yardName(c.GetCnames()), "from", old, "to", newRoot)
		}
	}
	return nil
}

// Prepare opens the hierarchies and makes the cgroups of the images as
// the mode says, with their properties, before any task is created.
// What it creates, Rollback removes.
func (r *Restorer) Prepare() error {
	if r.img == nil {
		return nil
	}
	for _, c := range r.img.GetControllers() {
		if len(c.GetDirs()) == 0 && !r.used(c) {
			continue
		}
		h, err := r.hs.get(c.GetCnames())
		if err != nil {
			return err
		}
		for _, d := range c.GetDirs() {
			if err := r.makeDir(c, h, "/", d); err != nil {
				return err
			}
		}
	}
	for _, c := range r.img.GetControllers() {
		h := r.hs.by[strings.Join(c.GetCnames(), ",")]
		if h == nil {
			continue
		}
		for _, d := range c.GetDirs() {
			if err := r.writeProps(c, h, "/", d); err != nil {
				return err
			}
		}
	}
	return nil
}

// used tells whether a set of the images names hierarchy c.
func (r *Restorer) used(c *cgpb.CgControllerEntry) bool {
	for _, s := range r.sets {
		for _, m := range s.GetCtls() {
			if contains(c.GetCnames(), m.GetName()) {
				return true
			}
		}
	}
	return false
}

func (r *Restorer) makeDir(c *cgpb.CgControllerEntry, h *hierarchy, parent string, d *cgpb.CgroupDirEntry) error {
	p := path.Join(parent, d.GetDirName())
	if strings.Contains("/"+d.GetDirName()+"/", "/../") {
		return fmt.Errorf("image cgroup.img: directory %q of %s: %w", d.GetDirName(), yardName(c.GetCnames()), ErrBadImage)
	}
	_, err := os.Stat(h.path(p))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !r.opts.Mode.creates() {
			return fmt.Errorf("cgroup %s of %s: %w (--manage-cgroups=%s creates none)", p, yardName(c.GetCnames()), ErrMissing, r.opts.Mode)
		}
		if err := r.mkdirAll(c, h, p); err != nil {
			return err
		}
		if err := restorePerms(h.path(p), d.GetDirPerms()); err != nil {
			return fmt.Errorf("cgroup %s of %s: %w", p, yardName(c.GetCnames()), err)
		}
		r.props[d] = true
		for _, pe := range d.GetProperties() {
			if specialProps[pe.GetName()] && p != "/" {
				if err := r.writeSpecial(h, p, pe); err != nil {
					return fmt.Errorf("cgroup %s of %s: %w", p, yardName(c.GetCnames()), err)
				}
			}
		}
	case err != nil:
		return fmt.Errorf("cgroup %s of %s: %w", p, yardName(c.GetCnames()), err)
	default:
		if r.opts.Mode == ModeStrict && p != "/" {
			return fmt.Errorf("cgroup %s of %s: %w (--manage-cgroups=strict)", p, yardName(c.GetCnames()), ErrExists)
		}
		r.props[d] = r.opts.Mode == ModeProps || r.opts.Mode == ModeFull
		if r.opts.Mode != ModeNone && p != "/" {
			if err := restorePerms(h.path(p), d.GetDirPerms()); err != nil {
				return fmt.Errorf("cgroup %s of %s: %w", p, yardName(c.GetCnames()), err)
			}
		}
	}
	for _, ch := range d.GetChildren() {
		if err := r.makeDir(c, h, p, ch); err != nil {
			return err
		}
	}
	return nil
}

// mkdirAll makes cgroup p and its missing ancestors, recording each. An
// intermediate cpuset v1 cgroup gets its parent's cpus and mems, without
// which no task could enter below it.
func (r *Restorer) mkdirAll(c *cgpb.CgControllerEntry, h *hierarchy, p string) error {
	var missing []string
	for q := p; q != "/"; q = path.Dir(q) {
		if _, err := os.Stat(h.path(q)); err == nil {
			break
		}
		missing = append([]string{q}, missing...)
	}
	for _, q := range missing {
		if err := os.Mkdir(h.path(q), 0o755); err != nil {
			return fmt.Errorf("make cgroup %s of %s: %w", q, yardName(c.GetCnames()), err)
		}
		r.created = append(r.created, createdDir{h, q})
		r.log.Info("cgroup created", "hierarchy", yardName(c.GetCnames()), "path", q)
		if !h.v2 && hasString(c.GetCnames(), "cpuset") {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(path.Join(h.path(path.Dir(q)), f))
				if err == nil && len(strings.TrimSpace(string(b))) > 0 {
					if err := os.WriteFile(path.Join(h.path(q), f), b, 0); err != nil {
						return fmt.Errorf("cgroup %s of cpuset: %s: %w", q, f, err)
					}
				}
			}
		}
	}
	return nil
}

func restorePerms(file string, pm *cgpb.CgroupPerms) error {
	if pm == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(file, &st); err != nil {
		return err
	}
	if st.Mode != pm.GetMode() {
		if err := unix.Chmod(file, pm.GetMode()&0o7777); err != nil {
			return fmt.Errorf("chmod %s: %w", path.Base(file), err)
		}
	}
	if st.Uid != pm.GetUid() || st.Gid != pm.GetGid() {
		if err := unix.Chown(file, int(pm.GetUid()), int(pm.GetGid())); err != nil {
			return fmt.Errorf("chown %s: %w", path.Base(file), err)
		}
	}
	return nil
}

// writeSpecial writes a property that must be there before anything
// enters the cgroup.
func (r *Restorer) writeSpecial(h *hierarchy, p string, pe *cgpb.CgroupPropEntry) error {
	name, v := pe.GetName(), pe.GetValue()
	switch {
	case name == "memory.swappiness" && v == "60", name == "memory.oom_control" && v == "0":
		return nil // the defaults
	case name == "devices.list":
		// Only a list can be read: deny all, then allow each line.
		if err := r.writeFile(path.Join(h.path(p), "devices.deny"), "a"); err != nil {
			return err
		}
		for _, l := range strings.Split(v, "\n") {
			if l == "" {
				continue
			}
			if err := r.writeFile(path.Join(h.path(p), "devices.allow"), l); err != nil {
				return err
			}
		}
		return nil
	}
	return r.writeProp(h, p, pe)
}

// writeProps writes the properties of the directories marked for it,
// parents first.
func (r *Restorer) writeProps(c *cgpb.CgControllerEntry, h *hierarchy, parent string, d *cgpb.CgroupDirEntry) error {
	p := path.Join(parent, d.GetDirName())
	if r.props[d] && p != "/" {
		for _, pe := range d.GetProperties() {
			name, v := pe.GetName(), pe.GetValue()
			if specialProps[name] {
				continue // written when the cgroup was made
			}
			file := path.Join(h.path(p), name)
			var err error
			switch {
			case name == "freezer.state", name == "cgroup.freeze" && v != "0":
				// Frozen once the tree runs, as it was.
				r.later = append(r.later, laterProp{file, v})
			case name == "cgroup.procs", name == "tasks":
				err = restorePerms(file, pe.GetPerms())
			case name == "cgroup.type":
				if v == "threaded" {
					err = r.writeFile(file, v)
				}
			case name == "cgroup.subtree_control":
				for _, ctl := range strings.Fields(v) {
					if err = r.writeFile(file, "+"+ctl); err != nil {
						break
					}
				}
			case name == "net_prio.ifpriomap":
				// One interface a write; those at priority 0 are the
				// default, and the host's interfaces may differ.
				for _, l := range strings.Split(v, "\n") {
					if f := strings.Fields(l); len(f) == 2 && f[1] != "0" {
						if werr := r.writeFile(file, l); werr != nil {
							r.log.Warn("cgroup property not restored", "file", file, "value", l, "err", werr)
						}
					}
				}
			default:
				err = r.writeProp(h, p, pe)
			}
			if err != nil {
				return fmt.Errorf("cgroup %s of %s: %w", p, yardName(c.GetCnames()), err)
			}
		}
	}
	for _, ch := range d.GetChildren() {
		if err := r.writeProps(c, h, p, ch); err != nil {
			return err
		}
	}
	return nil
}

// writeProp writes one property and its owner and mode. A cgroup v2
// controller's file that is missing gets its controller enabled in the
// ancestors' cgroup.subtree_control first (a parent made by this
// restore has none).
func (r *Restorer) writeProp(h *hierarchy, p string, pe *cgpb.CgroupPropEntry) error {
	file := path.Join(h.path(p), pe.GetName())
	if _, err := os.Stat(file); errors.Is(err, fs.ErrNotExist) && h.v2 {
		ctl, _, _ := strings.Cut(pe.GetName(), ".")
		if err := r.enableController(h, path.Dir(p), ctl); err != nil {
			return err
		}
	}
	if err := restorePerms(file, pe.GetPerms()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	err := r.writeFile(file, pe.GetValue())
	if errors.Is(err, unix.EOPNOTSUPP) {
		// A knob this kernel only reads now (memory.kmem.limit_in_bytes).
		r.log.Warn("cgroup property not restored: deprecated by this kernel", "file", pe.GetName(), "value", pe.GetValue())
		return nil
	}
	return err
}

// enableController enables ctl in the cgroup.subtree_control of p and
// of each ancestor this restore made that lacks it, from the top. One
// that existed before and lacks it is the host's to change: the restore
// fails naming it.
func (r *Restorer) enableController(h *hierarchy, p, ctl string) error {
	var chain []string
	for q := p; ; q = path.Dir(q) {
		chain = append([]string{q}, chain...)
		if q == "/" {
			break
		}
	}
	for _, q := range chain {
		sc := path.Join(h.path(q), "cgroup.subtree_control")
		b, err := os.ReadFile(sc)
		if err != nil {
			return fmt.Errorf("enable %s in cgroup %s: %w", ctl, q, err)
		}
		if hasString(strings.Fields(string(b)), ctl) {
			continue
		}
		if !r.made(h, q) {
			return fmt.Errorf("cgroup %s has the %s controller off for its children (cgroup.subtree_control): enable it, or restore with --manage-cgroups=none: %w", q, ctl, ErrMissing)
		}
		if err := r.writeFile(sc, "+"+ctl); err != nil {
			return fmt.Errorf("enable %s in cgroup %s: %w", ctl, q, err)
		}
	}
	return nil
}

// made tells whether this restore made cgroup p of h.
func (r *Restorer) made(h *hierarchy, p string) bool {
	for _, c := range r.created {
		if c.h == h && c.p == p {
			return true
		}
	}
	return false
}

func (r *Restorer) writeFile(file, v string) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", v, path.Base(file), err)
	}
	return nil
}

// member returns the hierarchy and path of member m.
func (r *Restorer) member(m *cgpb.CgMemberEntry) (*hierarchy, error) {
	c := controllerOf(r.img, m.GetName())
	return r.hs.get(c.GetCnames())
}

// Move puts task host (a process, or with thread a thread) into the
// cgroups of set id, unless it is in them already: cur is the set it was
// born in (its parent's, the dumping tool's for the root).
func (r *Restorer) Move(host int, id, cur uint32, thread bool) error {
	if r.img == nil || id == 0 || id == cur {
		return nil
	}
	s := r.sets[id]
	if s == nil {
		if id == r.rootSet {
			return nil // the restoring process's own cgroups
		}
		return fmt.Errorf("cgroup set %d is not in cgroup.img: %w", id, ErrBadImage)
	}
	var from map[string]string
	if c := r.sets[cur]; c != nil {
		from = map[string]string{}
		for _, m := range c.GetCtls() {
			from[m.GetName()] = m.GetPath()
		}
	}
	for _, m := range s.GetCtls() {
		if thread && from != nil && from[m.GetName()] == m.GetPath() {
			continue
		}
		h, err := r.member(m)
		if err != nil {
			return err
		}
		file := "cgroup.procs"
		if thread {
			file = "tasks"
			if h.v2 {
				file = "cgroup.threads"
			}
		}
		if err := r.writeFile(path.Join(h.path(m.GetPath()), file), strconv.Itoa(host)); err != nil {
			what := "pid"
			if thread {
				what = "tid"
			}
			return fmt.Errorf("move %s %d into cgroup %s of %s: %w", what, host, m.GetPath(), yardName(h.cnames), err)
		}
	}
	return nil
}

// EnterNamespace moves the root task t (host pid host) into the cgroups
// its cgroup namespace is rooted at, has it unshare its cgroup
// namespace there, and moves it on into its own cgroups, as criu does:
// a namespace's root is the cgroup its first task unshared in.
func (r *Restorer) EnterNamespace(t Caller, host int, id, cur uint32) error {
	if s := r.sets[id]; r.img != nil && s != nil {
		for _, m := range s.GetCtls() {
			p := m.GetCgnsPrefix()
			if p == 0 {
				continue
			}
			h, err := r.member(m)
			if err != nil {
				return err
			}
			if err := r.writeFile(path.Join(h.path(m.GetPath()[:p]), "cgroup.procs"), strconv.Itoa(host)); err != nil {
				return fmt.Errorf("move pid %d into the root %s of its cgroup namespace in %s: %w", host, m.GetPath()[:p], yardName(h.cnames), err)
			}
		}
	}
	if _, err := t.Call("unshare(CLONE_NEWCGROUP)", unix.SYS_UNSHARE, unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("pid %d: create its cgroup namespace: %w", host, err)
	}
	return r.Move(host, id, 0, false)
}

// Finish freezes again what was frozen (freezer.state, cgroup.freeze)
// once the tree runs, and releases the hierarchies.
func (r *Restorer) Finish() error {
	defer r.hs.close()
	var errs []error
	for _, l := range r.later {
		if err := r.writeFile(l.file, l.value); err != nil {
			errs = append(errs, err)
		}
	}
	r.created = nil
	return errors.Join(errs...)
}

// Rollback removes the cgroups this restore made, deepest first, once
// the tasks it created are gone (a cgroup whose last task just died may
// stay busy for a moment).
func (r *Restorer) Rollback() error {
	defer r.hs.close()
	var errs []error
	for i := len(r.created) - 1; i >= 0; i-- {
		c := r.created[i]
		var err error
		for try := 0; try < 100; try++ {
			if err = unix.Rmdir(c.h.path(c.p)); err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove cgroup %s of %s: %w", c.p, yardName(c.h.cnames), err))
		}
	}
	r.created = nil
	return errors.Join(errs...)
}
