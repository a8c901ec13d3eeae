package rpc

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/netns"
)

// dirs are the images and work directories of a request, opened from
// the client's fds (/proc/PEER/fd/N) or the images_dir path.
type dirs struct {
	images, work string
	log          *slog.Logger // the request's log (openLog), in the work dir
	held         []io.Closer  // kept open for as long as the request runs
}

func (d *dirs) close() {
	for _, f := range d.held {
		f.Close()
	}
}

// openDirs opens the images dir (images_dir_fd, or images_dir when the
// fd is -1) and the work dir (work_dir_fd, else the images dir) and
// returns their paths, as criu opens them: fds are the client's; then the
// request's log in the work dir.
func openDirs(peer int, o *rpc.CriuOpts) (*dirs, error) {
	d := &dirs{}
	var err error
	switch fd := o.GetImagesDirFd(); {
	case fd != -1:
		d.images, err = d.peerDir(peer, fd, "images_dir_fd")
	case o.GetImagesDir() != "":
		d.images = o.GetImagesDir()
		if st, serr := os.Stat(d.images); serr != nil {
			err = fmt.Errorf("rpc: images_dir: %w", serr)
		} else if !st.IsDir() {
			err = fmt.Errorf("rpc: images_dir %s: not a directory: %w", d.images, ErrBadRequest)
		}
	default:
		err = fmt.Errorf("rpc: neither images_dir_fd nor images_dir is set: %w", ErrBadRequest)
	}
	if err != nil {
		d.close()
		return nil, err
	}
	d.work = d.images
	if o.WorkDirFd != nil {
		if d.work, err = d.peerDir(peer, o.GetWorkDirFd(), "work_dir_fd"); err != nil {
			d.close()
			return nil, err
		}
	}
	log, c, err := openLog(o, d.work)
	if err != nil {
		d.close()
		return nil, err
	}
	d.log, d.held = log, append(d.held, c)
	return d, nil
}

// peerDir opens fd of the client as a directory and returns its path.
func (d *dirs) peerDir(peer int, fd int32, field string) (string, error) {
	p := fmt.Sprintf("/proc/%d/fd/%d", peer, fd)
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return "", fmt.Errorf("rpc: %s %d of client pid %d: %w", field, fd, peer, err)
	}
	d.held = append(d.held, f)
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return "", fmt.Errorf("rpc: %s %d of client pid %d: %w", field, fd, peer, err)
	}
	if !strings.HasPrefix(path, "/") || strings.HasSuffix(path, " (deleted)") {
		return "", fmt.Errorf("rpc: %s %d of client pid %d is %q, not a directory with a path: %w", field, fd, peer, path, ErrBadRequest)
	}
	return path, nil
}

// openLog opens the request's log as criu does: log_file (no '/', default
// criu.log) in the work dir at log_level (0 none ... 4 debug, default 2),
// or stderr with log_to_stderr.
func openLog(o *rpc.CriuOpts, workDir string) (*slog.Logger, io.Closer, error) {
	level := slog.LevelWarn
	switch l := o.GetLogLevel(); {
	case l <= 0:
		level = slog.LevelError + 4
	case l == 1:
		level = slog.LevelError
	case l == 3:
		level = slog.LevelInfo
	case l >= 4:
		level = slog.LevelDebug
	}
	hopts := &slog.HandlerOptions{Level: level}
	if o.GetLogToStderr() {
		return slog.New(slog.NewTextHandler(os.Stderr, hopts)), io.NopCloser(nil), nil
	}
	name := o.GetLogFile()
	if name == "" {
		name = "criu.log"
	}
	if strings.Contains(name, "/") {
		return nil, nil, fmt.Errorf("rpc: log_file %q: no subdirectories are allowed (use work_dir_fd): %w", name, ErrBadRequest)
	}
	f, err := os.OpenFile(workDir+"/"+name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("rpc: open log file: %w", err)
	}
	return slog.New(slog.NewTextHandler(f, hopts)), f, nil
}

// networkLock maps criu's network_lock: unset is stasis' default
// (nftables; criu's default, iptables, is the one stasis refuses).
func networkLock(o *rpc.CriuOpts) (string, error) {
	if o.NetworkLock == nil {
		return "", nil
	}
	switch o.GetNetworkLock() {
	case rpc.CriuNetworkLockMethod_NFTABLES:
		return "nftables", nil
	case rpc.CriuNetworkLockMethod_SKIP:
		return "skip", nil
	}
	return "", fmt.Errorf("rpc: network_lock %v: %w (nftables or skip)", o.GetNetworkLock(), ErrNotImplemented)
}

// option is one criu_opts field and how to tell that a request sets it
// to something stasis would have to act on.
type option struct {
	name string
	set  func(*rpc.CriuOpts) bool
}

// Options stasis does not implement, for every request: set to anything
// but their default they fail the request, naming them, instead of being
// ignored.
var commonRefused = []option{
	{"auto_dedup", func(o *rpc.CriuOpts) bool { return o.GetAutoDedup() }},
	{"force_irmap", func(o *rpc.CriuOpts) bool { return o.GetForceIrmap() }},
	{"exec_cmd", func(o *rpc.CriuOpts) bool { return len(o.GetExecCmd()) > 0 }},
	{"skip_mnt", func(o *rpc.CriuOpts) bool { return len(o.GetSkipMnt()) > 0 }},
	{"unix_sk_ino", func(o *rpc.CriuOpts) bool { return len(o.GetUnixSkIno()) > 0 }},
	{"irmap_scan_paths", func(o *rpc.CriuOpts) bool { return len(o.GetIrmapScanPaths()) > 0 }},
	{"empty_ns", func(o *rpc.CriuOpts) bool { return o.GetEmptyNs()&^unix.CLONE_NEWNET != 0 }}, // net: net.go
	{"timeout", func(o *rpc.CriuOpts) bool { return o.GetTimeout() != 0 }},
	{"status_fd", func(o *rpc.CriuOpts) bool { return o.StatusFd != nil }},
	{"lsm_profile", func(o *rpc.CriuOpts) bool { return o.GetLsmProfile() != "" }},
	{"lsm_mount_context", func(o *rpc.CriuOpts) bool { return o.GetLsmMountContext() != "" }},
	{"tls", func(o *rpc.CriuOpts) bool {
		return o.GetTls() || o.GetTlsCacert() != "" || o.GetTlsCacrl() != "" || o.GetTlsCert() != "" || o.GetTlsKey() != "" || o.GetTlsNoCnVerify()
	}},
	{"pidfd_store_sk", func(o *rpc.CriuOpts) bool { return o.PidfdStoreSk != nil }},
	{"mntns_compat_mode", func(o *rpc.CriuOpts) bool { return o.GetMntnsCompatMode() }},
	{"skip_file_rwx_check", func(o *rpc.CriuOpts) bool { return o.GetSkipFileRwxCheck() }},
}

// Options that belong to the other direction: refused, not ignored.
var (
	dumpRefused = append([]option{
		{"rst_sibling", func(o *rpc.CriuOpts) bool { return o.GetRstSibling() }},
		{"inherit_fd", func(o *rpc.CriuOpts) bool { return len(o.GetInheritFd()) > 0 }},
	}, commonRefused...)
	restoreRefused = append(append([]option{
		{"pid", func(o *rpc.CriuOpts) bool { return o.Pid != nil }},
		{"leave_running", func(o *rpc.CriuOpts) bool { return o.GetLeaveRunning() }},
		{"leave_stopped", func(o *rpc.CriuOpts) bool { return o.GetLeaveStopped() }},
		{"link_remap", func(o *rpc.CriuOpts) bool { return o.GetLinkRemap() }},
		{"external", func(o *rpc.CriuOpts) bool {
			return slices.ContainsFunc(o.GetExternal(), func(e string) bool { return !netns.IsExternal(e) })
		}},
		{"ghost_limit", func(o *rpc.CriuOpts) bool { return o.GhostLimit != nil }},
	}, memRefused...), commonRefused...)
)

// refuse names every option of o in list that is set.
func refuse(op string, o *rpc.CriuOpts, list []option) error {
	var set []string
	for _, opt := range list {
		if opt.set(o) {
			set = append(set, opt.name)
		}
	}
	if len(set) == 0 {
		return nil
	}
	return fmt.Errorf("rpc: %s option %s: %w", op, strings.Join(set, ", "), ErrNotImplemented)
}

// begin starts a DUMP or RESTORE: criu's configuration files, the
// caller's dirs, the request's options in its log, the options refused
// by name. fail is the reply to a failure, which the log records once it
// is open, as criu's does. When the request cannot start, failed is its
// reply (logged) and d is nil; otherwise d's close is the caller's.
func (s *server) begin(typ rpc.CriuReqType, o *rpc.CriuOpts, refused []option) (d *dirs, fail func(error) *rpc.CriuResp, failed *rpc.CriuResp) {
	fail = func(err error) *rpc.CriuResp { return failure(typ, err) }
	if err := configure(o); err != nil {
		return nil, fail, fail(asSetup(err))
	}
	d, err := openDirs(s.c.peer, o)
	if err != nil {
		return nil, fail, fail(asSetup(err))
	}
	op, log := typ.String(), d.log
	fail = func(err error) *rpc.CriuResp {
		log.Error(strings.ToLower(op)+" failed", "err", err)
		return failure(typ, err)
	}
	logRequest(log, op, o)
	if err := refuse(op, o, refused); err != nil {
		failed = fail(asSetup(err))
		d.close()
		return nil, fail, failed
	}
	return d, fail, nil
}

// logRequest writes the request's options to its log at debug level
// (log_level 4), every field set, as JSON.
func logRequest(log *slog.Logger, op string, o *rpc.CriuOpts) {
	b, err := json.Marshal(o)
	if err != nil {
		b = []byte(err.Error())
	}
	log.Debug("rpc request", "type", op, "opts", string(b))
}

// displayStats prints the stats of a request that set display_stats on
// the server's stdout, as criu does; a failure to is only logged.
func (s *server) displayStats(o *rpc.CriuOpts, d *dirs, restore bool) {
	if !o.GetDisplayStats() || s.b.DisplayStats == nil {
		return
	}
	if err := s.b.DisplayStats(os.Stdout, d.work, restore); err != nil {
		d.log.Warn("display_stats", "err", err)
	}
}
