// Package stasis checkpoints a running Linux process tree into a directory
// of CRIU-format image files and restores it later with the same PIDs,
// memory, registers and open files. It is the library behind the stasis
// command; the command is a thin layer over Dump, Restore and Check.
package stasis

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"syscall"

	"github.com/stasis-cr/stasis/internal/cgroup"
	"github.com/stasis-cr/stasis/internal/dump"
	"github.com/stasis-cr/stasis/internal/files"
	"github.com/stasis-cr/stasis/internal/interrupt"
	"github.com/stasis-cr/stasis/internal/kerndat"
	"github.com/stasis-cr/stasis/internal/linux"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/mount"
	"github.com/stasis-cr/stasis/internal/netlock"
	"github.com/stasis-cr/stasis/internal/netns"
	"github.com/stasis-cr/stasis/internal/puppet"
	"github.com/stasis-cr/stasis/internal/restore"
)

// DumpOptions selects what Dump checkpoints and what happens to the tree
// afterwards. Field names follow criu's long flag names.
type DumpOptions struct {
	Pid          int    // -t/--tree: root of the tree to dump
	ImagesDir    string // -D/--images-dir: created if missing, must not hold a dump
	WorkDir      string // -W/--work-dir: stats-dump and logs; defaults to ImagesDir
	LeaveRunning bool   // -R/--leave-running: the tree continues untouched
	LeaveStopped bool   // -s/--leave-stopped: the tree is left stopped (SIGSTOP)
	ShellJob     bool   // -j/--shell-job: the tree's session leader is outside it
	// NetworkLock (--network-lock): "nftables" (the default, also "") drops
	// the packets of the tree's TCP connections until they are restored;
	// "skip" does not.
	NetworkLock string
	// Unprivileged (--unprivileged): run without CAP_SYS_ADMIN, with
	// CAP_CHECKPOINT_RESTORE (and CAP_SYS_PTRACE over other users' tasks),
	// accepting the limits that brings, as criu's flag. Without
	// CAP_SYS_ADMIN the flag is required.
	Unprivileged bool
	// Files: --ghost-limit, --link-remap, -l/--file-locks, --external
	// (net[INO]:KEY too).
	Files FileDumpOptions
	// Mounts: --ext-mount-map, --enable-fs, --enable-external-sharing,
	// --enable-external-masters (--external mnt[...] come from Files).
	Mounts MountDumpOptions
	// Cgroups: --manage-cgroups, --cgroup-props, --cgroup-props-file,
	// --cgroup-dump-controller, --cgroup-yard, --cgroup-root,
	// --freeze-cgroup.
	Cgroups CgroupDumpOptions
	// Net: --empty-ns net.
	Net NetOptions
	Log *slog.Logger
	// Notify, if set, is called at criu's action-script points of a dump,
	// in criu's order and with its names ("pre-dump" before the tree is
	// touched, "post-dump" once the images are complete and before the
	// tree is killed or let go); pid is 0. An error fails the dump there:
	// the tree is resumed and the images removed.
	Notify Notify
	// Mem: --track-mem, --prev-images-dir, --page-server (migrate.go).
	Mem MemDumpOptions
	// CPUCap (--cpu-cap): when given, cpuinfo.img is written (cpuinfo.go).
	CPUCap CPUCaps
	// LazyPages (--lazy-pages): private anonymous pages are not saved; once
	// the images are written the dump, the tree still frozen, serves them
	// on Mem.Address:Mem.Port to a lazy-pages daemon, then kills the tree
	// (lazy.go).
	LazyPages bool
	// Seal: --compress, --encrypt --key-file (sealing.go).
	Seal SealOptions
}

// Notify is called at criu's action-script points (criu's
// --action-script, the RPC's notify_scripts) with criu's name for the
// point and, where criu gives one, the root's host pid.
type Notify func(script string, pid int) error

// NetOptions are the options about the network namespace of a tree, as
// criu's flags: see internal/netns.Options.
type NetOptions = netns.Options

// IsNetExternal tells whether an --external value names a network object:
// net[INO]:KEY or veth[IFNAME]:OUT[@BRIDGE].
func IsNetExternal(s string) bool { return netns.IsExternal(s) }

// FileDumpOptions are the options about the files of a dump.
type FileDumpOptions = files.DumpOptions

// FileRestoreOptions are the options about the files of a restore.
type FileRestoreOptions = files.RestoreOptions

// CgroupDumpOptions are the cgroup options of a dump.
type CgroupDumpOptions = cgroup.DumpOptions

// CgroupRestoreOptions are the cgroup options of a restore.
type CgroupRestoreOptions = cgroup.RestoreOptions

// CgroupMode is criu's --manage-cgroups mode.
type CgroupMode = cgroup.Mode

// CgroupRoot is one --cgroup-root [CTRL:]PATH.
type CgroupRoot = cgroup.Root

// ParseCgroupMode parses --manage-cgroups' value ("" is soft, criu's
// default).
func ParseCgroupMode(s string) (CgroupMode, error) { return cgroup.ParseMode(s) }

// ParseCgroupRoot parses --cgroup-root [CTRL:]PATH.
func ParseCgroupRoot(s string) (CgroupRoot, error) { return cgroup.ParseRoot(s) }

// InheritFd is one --inherit-fd fd[N]:KEY of a restore.
type InheritFd = files.InheritFd

// ParseInheritFd parses criu's --inherit-fd fd[N]:KEY.
func ParseInheritFd(s string) (InheritFd, error) { return files.ParseInheritFd(s) }

// RestoreOptions selects how Restore brings an image directory back.
type RestoreOptions struct {
	ImagesDir string // -D/--images-dir
	WorkDir   string // -W/--work-dir
	PidFile   string // --pidfile: written with the (host) PID of the restored root
	ShellJob  bool   // -j/--shell-job: restore into the caller's session
	PidNS     bool   // --pidns: restore into a new pid namespace with the original pids
	// Sibling (-S/--restore-sibling, the RPC's rst_sibling): the root is
	// a child of the caller's parent, not of the caller (Restored.Wait
	// cannot wait for it), as criu's root is of the swrk client.
	Sibling bool
	// NetworkLock (--network-lock): "nftables" (the default, also "") locks
	// the connections during the restore and removes the dump's lock once
	// they run; "skip" touches no lock.
	NetworkLock string
	// Unprivileged (--unprivileged): run without CAP_SYS_ADMIN, with
	// CAP_CHECKPOINT_RESTORE (and CAP_SYS_PTRACE over other users' tasks),
	// accepting the limits that brings, as criu's flag. Without
	// CAP_SYS_ADMIN the flag is required.
	Unprivileged bool
	// Files: --inherit-fd, -l/--file-locks, --file-validation.
	Files FileRestoreOptions
	// Mounts: -r/--root, --external mnt[KEY]:PATH, --ext-mount-map.
	Mounts MountRestoreOptions
	// Cgroups: --manage-cgroups (soft by default, as criu), --cgroup-root,
	// --cgroup-yard.
	Cgroups CgroupRestoreOptions
	// Net: --veth-pair, --external veth[IFNAME]:OUT[@BRIDGE], --join-ns
	// net:PATH, --empty-ns net, --weak-sysctls; an external network
	// namespace (dumped with --external net[INO]:KEY) is given with
	// --inherit-fd fd[N]:KEY.
	Net NetOptions
	Log *slog.Logger
	// Notify, if set, is called at criu's action-script points of a
	// restore, in criu's order: "pre-restore", ("setup-namespaces" with
	// the root's pid and "post-setup-namespaces" when the tree gets
	// namespaces of its own: the images' or PidNS),
	// "post-restore" with the root's pid, "pre-resume", then once the
	// tree runs "post-resume". An error fails the restore there, but for
	// "post-resume", whose error is only logged.
	Notify Notify
	// CPUCap (--cpu-cap): when given, this CPU is checked against the
	// images' cpuinfo.img for the capabilities it names (cpuinfo.go).
	CPUCap CPUCaps
	// LazyPages (--lazy-pages): private anonymous memory is left missing
	// and filled by the lazy-pages daemon listening in the work dir
	// (LazyPages) as the tasks touch it: they run before it has arrived.
	LazyPages bool
	// KeyFile (--key-file): decrypts images sealed with --encrypt.
	KeyFile string
	// Prepared, if set, is called once the images are read and checked,
	// before the first task is made (stasis migrate's target waits there
	// for the source's tree to be gone); an error fails the restore.
	Prepared func() error
}

// Restored is a restored process tree, running on its own.
type Restored = restore.Restored

// ErrNotSupported is wrapped by every error about something stasis cannot
// checkpoint or restore (an fd kind, a mapping, a namespace) and about a
// kernel feature it needs and this kernel lacks, which is named with the
// kernel that brought it: "restore: needs clone3 set_tid (kernel 5.5+):
// ...". The internal packages' "not supported" errors all match it with
// errors.Is.
var ErrNotSupported = linux.ErrNotSupported

// ErrInterrupted is wrapped by the error of a dump or restore stopped
// because its context was canceled, by a signal or otherwise.
var ErrInterrupted = interrupt.ErrInterrupted

// CancelBySignal is the cause to cancel a context with (see
// context.WithCancelCause) when the process got sig: the error of the
// dump or restore it stops then names sig, and InterruptSignal finds it.
func CancelBySignal(sig syscall.Signal) error { return &interrupt.Signal{Sig: sig} }

// InterruptSignal returns the signal that stopped the dump or restore
// whose error is err, if it was stopped by one (see CancelBySignal).
func InterruptSignal(err error) (syscall.Signal, bool) { return interrupt.SignalOf(err) }

// Dump checkpoints the tree rooted at opts.Pid. On failure the tree is
// left running exactly as it was, and the files the dump wrote are
// removed. When the dump kills the tree and its root is a child of the
// caller, the dump itself reaps it (the tracer's wait collects its exit):
// the caller's own wait for it then finds no child.
func Dump(opts DumpOptions) error { return DumpContext(context.Background(), opts) }

// DumpContext is Dump that stops when ctx is done: the dump rolls back as
// a failed one does (the tree resumed as it was, the partial images
// removed) and returns an error wrapping ErrInterrupted. Once the images
// are complete and the tree is being killed, it completes instead.
func DumpContext(ctx context.Context, opts DumpOptions) error {
	lock, err := netlock.ParseMode(opts.NetworkLock)
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	priv, err := privilege("dump", opts.Unprivileged, opts.Log)
	if err != nil {
		return err
	}
	if err := kerndat.Require(dump.Needs...); err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	ll, err := opts.lazyListener()
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	if ll != nil {
		defer ll.Close()
	}
	opts.Mem.Wire = opts.Seal
	mo, done, err := opts.Mem.memOptions()
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	defer done()
	err = dump.Dump(ctx, dump.Options{
		Mem: mo, LazyPages: ll,
		Pid: opts.Pid, ImagesDir: opts.ImagesDir, WorkDir: opts.WorkDir,
		LeaveRunning: opts.LeaveRunning, LeaveStopped: opts.LeaveStopped,
		ShellJob: opts.ShellJob, NetworkLock: lock, Files: opts.Files, Net: opts.Net, Log: opts.Log,
		Notify: opts.Notify, Cgroups: cgroupDump(opts.Cgroups, priv.Full(), opts.Log), Mounts: dumpMounts(opts),
		CPUCap: opts.CPUCap,
	})
	if err == nil {
		_, err = sealDir(opts.ImagesDir, opts.Seal, opts.Log)
	}
	return priv.Explain("dump", opts.Pid, err)
}

// MountDumpOptions are criu's dump options about a container's mounts.
type MountDumpOptions = mount.DumpOptions

// MountRestoreOptions are criu's restore options about a container's
// mounts (--root, external mounts).
type MountRestoreOptions = mount.RestoreOptions

// dumpMounts adds the --external mnt[...] values to the mount options.
func dumpMounts(opts DumpOptions) mount.DumpOptions {
	m := opts.Mounts
	m.External = append(append([]string(nil), m.External...), opts.Files.External...)
	return m
}

// cgroupDump completes the cgroup options of a dump: without
// CAP_SYS_ADMIN (--unprivileged) no hierarchy can be mounted, and as in
// criu no cgroup is recorded.
func cgroupDump(o CgroupDumpOptions, full bool, log *slog.Logger) CgroupDumpOptions {
	o.Off = o.Off || !full
	if o.Log == nil {
		o.Log = log
	}
	return o
}

func cgroupRestore(o CgroupRestoreOptions, full bool, log *slog.Logger) CgroupRestoreOptions {
	o.Off = o.Off || !full
	if o.Log == nil {
		o.Log = log
	}
	return o
}

// privilege checks up front that stasis may run op at all, as criu's
// check_caps, and returns what it may do, to explain a later EPERM.
func privilege(op string, unprivileged bool, log *slog.Logger) (kerndat.Privilege, error) {
	priv, err := kerndat.CurrentPrivilege()
	if err != nil {
		return priv, fmt.Errorf("%s: %w", op, err)
	}
	if err := priv.Check(op, unprivileged); err != nil {
		return priv, err
	}
	if !priv.Full() && log != nil {
		log.Info("running without CAP_SYS_ADMIN (--unprivileged): tasks under seccomp, TCP connections, the network lock and other users' processes or files are out of reach",
			"uid", priv.Uid, "capeff", fmt.Sprintf("%#x", priv.Eff))
	}
	return priv, nil
}

// PreflightReport is what Preflight found: the size of the tree and every
// reason its dump would fail, one per resource (pid, fd or mapping, what
// it is, and the flag or fix when there is one), worded as the dump's
// own errors.
type PreflightReport = dump.Report

// Preflight tells whether Dump(opts) would succeed, without dumping: the
// tree is seized as for a dump, every refusal is listed instead of the
// first one only, and the tree is resumed exactly as a failed dump leaves
// it. No images are written (ImagesDir is not used) and nothing outside
// stasis is changed: no network lock, no TCP repair mode, no
// --link-remap link. The error is for a tree that could not be checked
// at all (no such pid, not seizable).
func Preflight(opts DumpOptions) (*PreflightReport, error) {
	return PreflightContext(context.Background(), opts)
}

// PreflightContext is Preflight that stops when ctx is done: the tree is
// resumed as a failed dump leaves it, and the error wraps ErrInterrupted.
func PreflightContext(ctx context.Context, opts DumpOptions) (*PreflightReport, error) {
	if err := kerndat.Require(dump.Needs...); err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	return dump.Preflight(ctx, dump.Options{
		Pid: opts.Pid, ShellJob: opts.ShellJob, Files: opts.Files, Log: opts.Log,
	})
}

// Restore restores a checkpoint and returns once the tree runs. The root
// task is a child of the calling process: Restored.Wait reaps it. On
// failure no task of the tree is left behind.
func Restore(opts RestoreOptions) (*Restored, error) {
	return RestoreContext(context.Background(), opts)
}

// RestoreContext is Restore that stops when ctx is done: every task
// created is killed, as on a failure, and the error wraps
// ErrInterrupted. Once the tree runs, it no longer stops.
func RestoreContext(ctx context.Context, opts RestoreOptions) (*Restored, error) {
	lock, err := netlock.ParseMode(opts.NetworkLock)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	priv, err := privilege("restore", opts.Unprivileged, opts.Log)
	if err != nil {
		return nil, err
	}
	if err := kerndat.Require(restore.Needs...); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if opts.KeyFile != "" {
		if err := UseKeyFile(opts.KeyFile); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
	}
	r, err := restore.Restore(ctx, restore.Options{
		ImagesDir: opts.ImagesDir, WorkDir: opts.WorkDir, PidFile: opts.PidFile,
		ShellJob: opts.ShellJob, PidNS: opts.PidNS, Sibling: opts.Sibling, NetworkLock: lock, Files: opts.Files, Net: opts.Net, Log: opts.Log,
		Unprivileged: !priv.Full(), Notify: opts.Notify, Cgroups: cgroupRestore(opts.Cgroups, priv.Full(), opts.Log), Mounts: opts.Mounts,
		CPUCap:    opts.CPUCap,
		LazyPages: opts.LazyPages,
		Prepared:  opts.Prepared,
	})
	return r, priv.Explain("restore", 0, err)
}

// Feature is one kernel feature stasis relies on, as probed on this host.
type Feature = kerndat.Feature

// Check probes the kernel features stasis relies on. The Required ones
// are those Dump and Restore Require before they start.
func Check() []Feature { return kerndat.Probe() }

// CheckFeature answers `criu check --feature NAME` for one of criu's
// feature names (mem_dirty_track, uffd, clone3_set_tid, ...) or one of
// the names of Check's features. detail says what was found, and, for a
// feature absent, what does not work without it. known is false for a
// name stasis does not answer.
func CheckFeature(name string) (supported bool, detail string, known bool) {
	if supported, detail, known = kerndat.CRIUFeature(name); known {
		return supported, detail, true
	}
	f, ok := kerndat.Lookup(name)
	if !ok {
		return false, "", false
	}
	detail = f.Detail
	if !f.OK {
		detail += " -> " + f.Impact
	}
	return f.OK, detail, true
}

// FeatureNames lists the names CheckFeature answers: criu's (sorted),
// then those of Check's features, in its order.
func FeatureNames() []string {
	names := kerndat.CRIUFeatureNames()
	for _, f := range Check() {
		names = append(names, f.Name)
	}
	return names
}

// Reexec runs what stasis re-executes its own binary as, when this process
// was started as that: the restore's puppet (exec'ed under ptrace and
// stopped before its first instruction, never run; started by hand, it
// exits 2) and the init of a restored pid namespace (which reaps orphans
// and exits with the restored root's status). A program that restores
// through this package must call it first thing in main, before flags are
// parsed, and exit with code when ok is true:
//
//	if code, ok := stasis.Reexec(); ok {
//		os.Exit(code)
//	}
func Reexec() (code int, ok bool) {
	if len(os.Args) > 1 && os.Args[1] == puppet.PuppetArg {
		return 2, true
	}
	if len(os.Args) > 1 && os.Args[1] == mem.HolderArg {
		return mem.RunHolder(os.Args[1:]), true
	}
	if len(os.Args) == 2 && os.Args[1] == puppet.SiblingArg {
		return puppet.RunSibling(), true
	}
	if len(os.Args) == 3 && os.Args[1] == puppet.WaitArg {
		return puppet.RunWait(os.Args[2]), true
	}
	if len(os.Args) == 3 && os.Args[1] == puppet.InitArg {
		root, err := strconv.Atoi(os.Args[2])
		if err != nil {
			return 2, true
		}
		return puppet.RunInit(root), true
	}
	return 0, false
}
