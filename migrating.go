package stasis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/inventory"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/migrate"
	"github.com/stasis-cr/stasis/internal/netlock"
	"github.com/stasis-cr/stasis/internal/seal"
)

// MigrateOptions are the options of `stasis migrate` (docs/migration.md).
type MigrateOptions struct {
	Pid int // -t: the root of the tree to move
	// To is the target: netns:PATH (a network namespace of this machine,
	// e.g. /var/run/netns/NAME), ssh://[USER@]HOST[:PORT] (a stasis on
	// HOST, started over ssh), or tcp://HOST:PORT (a `stasis
	// migrate-receive --listen` there).
	To string
	// ImagesDir (-D): the source's images, one dir per round (1, 2, ...,
	// final); a temporary dir, removed after a migration, if "".
	ImagesDir string
	// TargetDir: the target's images dir (migrate-receive -D); for netns,
	// a temporary dir of this machine if "", kept after a migration.
	TargetDir string
	// TargetStasis: the stasis command on an ssh target ("stasis").
	TargetStasis string
	// TargetLog: the target's log (-v4 -o TargetLog, in its images dir),
	// its restore's in restore.log beside it; none if "".
	TargetLog string
	MaxRounds int  // most pre-copy rounds (0: 8)
	ShellJob  bool // -j, on both sides
	// LazyPages (--lazy-pages): the target restores the tree lazily, at
	// once, and a lazy-pages daemon there fills its private memory from
	// the images of every round while it runs (post-copy of what the
	// pre-copy rounds sent): the downtime no longer grows with the
	// memory.
	LazyPages bool
	// PidFile: the target's restore writes the restored root's pid there.
	PidFile string
	// Seal: --compress, --encrypt (the stream; the target gets the key
	// file's path: it must hold the same key).
	Seal SealOptions
	// TLS: for tcp:// targets.
	TLS TLSOptions
	// Notify: the action-script points of the final dump ("post-dump":
	// the images are complete, the network locked, the tree not yet
	// killed: where a failover moves an address).
	Notify Notify
	Log    *slog.Logger
	// Progress, if set, gets a line per step.
	Progress io.Writer
}

// MigrateRound is one pre-copy round or the final dump.
type MigrateRound struct {
	Pages  uint64        // pages saved
	Frozen time.Duration // the tree stopped
	Wall   time.Duration // the dump
	Send   time.Duration // sending the images to the target
	Bytes  int64         // image bytes sent
}

// MigrateStats are the figures of a migration.
type MigrateStats struct {
	Pid    int // the restored root on the target
	Rounds []MigrateRound
	Final  MigrateRound
	// Downtime: from the final freeze to the tree running on the target.
	// Its parts: the final dump until its images are complete
	// (Final.Frozen), their transfer (Final.Send), the lock of their
	// connections on the target (Lock), the post-dump action scripts
	// (Hook), the kill of the tree here (Kill), the restore there
	// (Restore, as the target measured it); Other is what is left (the
	// round trips, starting the restore).
	Downtime, Lock, Hook, Kill, Restore, Other time.Duration
	// PostCopy (--lazy-pages): from the tree running on the target until
	// its memory is all there; Total: the whole migration.
	PostCopy, Total time.Duration
	// Sent is the image bytes sent, Wire what went on the stream (sealed).
	Sent, Wire int64

	restored time.Time // the target answered the restore
}

func (o MigrateOptions) log() *slog.Logger {
	if o.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Log
}

func (o MigrateOptions) progress(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, format+"\n", args...)
	}
}

// target is the receiving end of a migration.
type target struct {
	conn net.Conn
	wait func() error // the receiver process, if started here
}

// Migrate moves the tree rooted at opts.Pid to opts.To: pre-copy rounds
// (pre-dump, each sending only what was written since the one before)
// until the pages to send stop shrinking, the final dump (the tree
// frozen, its TCP connections locked), the transfer of its images and
// the restore on the target. If the final transfer or restore fails, the
// tree is restored here again from the final images.
func Migrate(ctx context.Context, opts MigrateOptions) (*MigrateStats, error) {
	if opts.Pid <= 0 {
		return nil, fmt.Errorf("migrate: no pid (-t)")
	}
	if opts.MaxRounds <= 0 {
		opts.MaxRounds = 8
	}
	so, err := opts.Seal.load()
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	root := opts.ImagesDir
	if root == "" {
		if root, err = os.MkdirTemp("", "stasis-migrate-"); err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
	} else if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	start := time.Now()
	tg, err := connectTarget(opts)
	if err != nil {
		return nil, fmt.Errorf("migrate pid %d to %s: %w", opts.Pid, opts.To, err)
	}
	conn := tg.conn
	var sc *seal.Conn
	if so.Enabled() {
		if sc, err = seal.Client(conn, migrate.LabelToTarget, migrate.LabelToSource, so); err != nil {
			conn.Close()
			return nil, fmt.Errorf("migrate: %w", err)
		}
		conn = sc
	}
	snd := migrate.NewSender(conn)
	st, err := migrateOver(ctx, opts, root, snd)
	st.Sent = snd.Sent
	if sc != nil {
		st.Sent, st.Wire = sc.Sent()
	} else {
		st.Wire = st.Sent
	}
	conn.Close()
	werr := tg.wait()
	if st.Pid > 0 && opts.LazyPages {
		// The target ends once its lazy-pages daemon has every page in.
		st.PostCopy = time.Since(st.restored)
		if werr != nil && err == nil {
			err = fmt.Errorf("post-copy on the target (the tree runs there, its memory is incomplete): %w", werr)
		}
	} else if werr != nil && err == nil {
		opts.log().Warn("migration target ended badly", "err", werr)
	}
	st.Total = time.Since(start)
	if err != nil {
		return st, fmt.Errorf("migrate pid %d to %s: %w", opts.Pid, opts.To, err)
	}
	if opts.ImagesDir == "" {
		os.RemoveAll(root)
	}
	return st, nil
}

func migrateOver(ctx context.Context, opts MigrateOptions, root string, s *migrate.Sender) (*MigrateStats, error) {
	st := &MigrateStats{}
	log := opts.log()
	// Each round's images go to the target while the next round runs:
	// a round is not made longer (and the next dirty set bigger) by the
	// transfer of the one before.
	q := migrate.NewQueue()
	fail := func(err error) (*MigrateStats, error) {
		q.Close()
		s.End(false)
		return st, err
	}
	prev := ""
	var last *MigrateRound
	var perPage time.Duration // the cheapest copy of a page seen
	// Room for every round: the queue fills them in while rounds go on.
	st.Rounds = make([]MigrateRound, 0, opts.MaxRounds)
	for n := 1; n <= opts.MaxRounds; n++ {
		name := strconv.Itoa(n)
		dir := filepath.Join(root, name)
		d := DumpOptions{Pid: opts.Pid, ImagesDir: dir, ShellJob: opts.ShellJob, Log: log, Mem: MemDumpOptions{TrackMem: true}}
		if prev != "" {
			d.Mem.PrevImagesDir = "../" + prev
		}
		t0 := time.Now()
		if err := PreDumpContext(ctx, d); err != nil {
			return fail(fmt.Errorf("pre-copy round %d: %w", n, err))
		}
		st.Rounds = append(st.Rounds, roundOf(dir, time.Since(t0)))
		r := &st.Rounds[len(st.Rounds)-1]
		q.Add(func() error {
			t, before := time.Now(), s.Sent
			if err := s.SendDir(dir, name); err != nil {
				return fmt.Errorf("pre-copy round %s: %w", name, err)
			}
			r.Send, r.Bytes = time.Since(t), s.Sent-before
			opts.progress("pre-copy round %d: %d pages, frozen %v, dump %v, sent %.1f MiB in %v", n, r.Pages, r.Frozen.Round(time.Microsecond),
				r.Wall.Round(time.Millisecond), float64(r.Bytes)/(1<<20), r.Send.Round(time.Millisecond))
			return nil
		})
		prev = name
		if cp := r.Wall - r.Frozen; r.Pages > 0 && cp > 0 && (perPage == 0 || cp/time.Duration(r.Pages) < perPage) {
			perPage = cp / time.Duration(r.Pages)
		}
		if converged(last, r, perPage) {
			// The final dump must not wait, frozen, for earlier rounds
			// still on their way (the first, whole memory, round takes
			// longest): one more round covers what was written while
			// they went.
			if !q.Busy() || n == opts.MaxRounds {
				break
			}
			if err := q.Sync(); err != nil {
				return fail(err)
			}
		}
		last = r
	}
	dir := filepath.Join(root, "final")
	args := []string{"--tcp-established"}
	if opts.ShellJob {
		args = append(args, "--shell-job")
	}
	targs := args
	if opts.LazyPages {
		targs = append(slices.Clone(args), "--lazy-pages")
	}
	// At post-dump the images are complete and the tree still frozen:
	// they go to the target, which locks their connections, before the
	// user's post-dump (which moves the address) and the kill.
	var postDump, sentAt time.Time
	var send, lock, hook time.Duration
	var bytes int64
	notify := func(point string, pid int) error {
		if point == "post-dump" {
			postDump = time.Now()
			if err := q.Close(); err != nil {
				return err
			}
			before := s.Sent
			if err := s.SendDir(dir, "final"); err != nil {
				return err
			}
			send, bytes = time.Since(postDump), s.Sent-before
			t := time.Now()
			if err := s.Lock("final"); err != nil {
				return err
			}
			// The target reads the final images while the tree here is
			// let go of (the scripts, the kill).
			if err := s.Prepare("final", targs); err != nil {
				return err
			}
			lock, sentAt = time.Since(t), time.Now()
		}
		if opts.Notify == nil {
			return nil
		}
		t := time.Now()
		err := opts.Notify(point, pid)
		if point == "post-dump" {
			hook = time.Since(t)
		}
		return err
	}
	d := DumpOptions{Pid: opts.Pid, ImagesDir: dir, ShellJob: opts.ShellJob, Log: log, Notify: notify,
		Mem: MemDumpOptions{TrackMem: true, PrevImagesDir: "../" + prev}}
	d.Files.TCPEstablished = true
	t0 := time.Now()
	if err := DumpContext(ctx, d); err != nil {
		return fail(fmt.Errorf("final dump: %w", err))
	}
	// The tree is gone here: from now on a failure restores it here.
	dumped := time.Now()
	st.Final = roundOf(dir, dumped.Sub(t0))
	st.Final.Send, st.Final.Bytes, st.Lock, st.Hook = send, bytes, lock, hook
	var err error
	if sentAt.IsZero() {
		err = fmt.Errorf("final dump: no post-dump point: the images were not sent")
	} else {
		st.Kill = dumped.Sub(postDump) - send - lock - hook
		st.Pid, st.Restore, err = s.Restore("final", targs)
		st.restored = time.Now()
	}
	if err != nil {
		s.End(false)
		if rerr := restoreHere(dir, args, log); rerr != nil {
			return st, fmt.Errorf("%w; and the restore here from %s failed too: %w", err, dir, rerr)
		}
		return st, fmt.Errorf("%w (the tree was restored here again from %s)", err, dir)
	}
	// From the freeze (the images were complete Final.Frozen after it) to
	// the target's answer.
	st.Downtime = st.restored.Sub(postDump) + st.Final.Frozen
	st.Other = st.Downtime - st.Final.Frozen - send - lock - hook - st.Kill - st.Restore
	if err := s.End(true); err != nil {
		log.Warn("migration: end of the stream", "err", err)
	}
	opts.progress("final dump: %d pages, frozen %v, sent %.1f MiB in %v; restored as pid %d on the target in %v",
		st.Final.Pages, st.Final.Frozen.Round(time.Microsecond), float64(st.Final.Bytes)/(1<<20), st.Final.Send.Round(time.Millisecond),
		st.Pid, st.Restore.Round(time.Millisecond))
	// The address has left with the tree: the source's lock of its
	// connections has nothing left to hold.
	if id := runIDOf(dir); id != "" {
		if err := netlock.UnlockRun(id); err != nil {
			log.Warn("migration: remove the source's network lock", "err", err)
		}
	}
	return st, nil
}

// Pre-copy rounds converge when each is shorter than the one before: the
// pages written during a round are the next round's. They stop once the
// final dump would copy about as many pages as the last round within
// finalCopyBudget (at the cheapest copy rate of a round, the first's
// usually: its fixed costs are spread over the whole memory), when they
// no longer shrink by a tenth (a tree writing faster than the copy never
// converges), or at MaxRounds.
const (
	finalCopyBudget = 10 * time.Millisecond
	fewPages        = 64
)

// converged reports whether the rounds may stop after r (last: the round
// before it, nil for the first), a page being copied in perPage.
func converged(last, r *MigrateRound, perPage time.Duration) bool {
	switch {
	case r.Pages < fewPages:
		return true
	case last == nil:
		return false
	case perPage*time.Duration(r.Pages) <= finalCopyBudget:
		return true
	}
	return r.Pages >= last.Pages*9/10
}

func roundOf(dir string, wall time.Duration) MigrateRound {
	r := MigrateRound{Wall: wall}
	d, err := images.Open(dir)
	if err != nil {
		return r
	}
	e := &stats.StatsEntry{}
	if d.ReadOne("stats-dump", e) == nil {
		r.Pages = e.GetDump().GetPagesWritten()
		r.Frozen = time.Duration(e.GetDump().GetFrozenTime()) * time.Microsecond
	}
	return r
}

func runIDOf(dir string) string {
	d, err := images.Open(dir)
	if err != nil {
		return ""
	}
	e := &inventory.InventoryEntry{}
	if d.ReadOne("inventory.img", e) != nil {
		return ""
	}
	return e.GetDumpCriuRunId()
}

// restoreHere restores the final images on the source (a failed
// migration), detached, as `stasis restore -d` would.
func restoreHere(dir string, args []string, log *slog.Logger) error {
	cmd := exec.Command("/proc/self/exe", append([]string{"restore", "-D", dir, "-d"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	log.Info("migration failed: the tree was restored on the source", "dir", dir)
	return nil
}

// connectTarget starts or reaches the receiver of opts.To.
func connectTarget(opts MigrateOptions) (*target, error) {
	kind, rest, ok := strings.Cut(opts.To, ":")
	if !ok {
		return nil, fmt.Errorf("--to %q: netns:PATH, ssh://HOST or tcp://HOST:PORT", opts.To)
	}
	recvArgs := func(dir string) []string {
		a := []string{"migrate-receive", "-D", dir}
		if opts.Seal.KeyFile != "" {
			a = append(a, "--key-file", opts.Seal.KeyFile)
		}
		if opts.PidFile != "" {
			a = append(a, "--pidfile", opts.PidFile)
		}
		if opts.TargetLog != "" {
			a = append(a, "-v4", "-o", opts.TargetLog)
		}
		return a
	}
	switch kind {
	case "netns":
		dir := opts.TargetDir
		if dir == "" {
			var err error
			if dir, err = os.MkdirTemp("", "stasis-migrate-target-"); err != nil {
				return nil, err
			}
		}
		return startInNetns(rest, append(recvArgs(dir), "--fd", "3"))
	case "ssh":
		u, err := url.Parse(opts.To)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("--to %q: ssh://[USER@]HOST[:PORT]", opts.To)
		}
		dir := opts.TargetDir
		if dir == "" {
			dir = "/var/lib/stasis/migrate/" + strconv.Itoa(opts.Pid) + "-" + strconv.FormatInt(time.Now().Unix(), 10)
		}
		bin := opts.TargetStasis
		if bin == "" {
			bin = "stasis"
		}
		sargs := []string{"-o", "BatchMode=yes"}
		if u.Port() != "" {
			sargs = append(sargs, "-p", u.Port())
		}
		host := u.Hostname()
		if u.User != nil {
			host = u.User.Username() + "@" + host
		}
		sargs = append(sargs, host, "mkdir", "-p", dir, "&&", bin)
		sargs = append(sargs, append(recvArgs(dir), "--stdio")...)
		cmd := exec.Command("ssh", sargs...)
		cmd.Stderr = os.Stderr
		// Killed with stasis: a left ssh would keep the receiver waiting.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("ssh: %w", err)
		}
		return &target{conn: migrate.PipeConn(out, in), wait: cmd.Wait}, nil
	case "tcp":
		addr := strings.TrimPrefix(rest, "//")
		c, err := dialTLS(addr, opts.TLS)
		if err != nil {
			return nil, err
		}
		return &target{conn: c, wait: func() error { return nil }}, nil
	}
	return nil, fmt.Errorf("--to %q: netns:PATH, ssh://HOST or tcp://HOST:PORT", opts.To)
}

// startInNetns starts `stasis ARGS` in the network namespace at path, on
// one end of a socket pair (its fd 3), from a thread that enters the
// namespace for the fork only.
func startInNetns(path string, args []string) (*target, error) {
	ns, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("target network namespace: %w", err)
	}
	defer ns.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "migration"), os.NewFile(uintptr(fds[1]), "migration")
	defer theirs.Close()
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	if err := startIn(ns, cmd); err != nil {
		mine.Close()
		return nil, err
	}
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	return &target{conn: c, wait: cmd.Wait}, nil
}

// startIn forks cmd from a thread in the network namespace ns: the child
// and all it starts live there.
func startIn(ns *os.File, cmd *exec.Cmd) error {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("own network namespace: %w", err)
	}
	defer orig.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter the target network namespace %s: %w", ns.Name(), err)
	}
	serr := cmd.Start()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and ends with the goroutine: no other
		// goroutine runs in the target's namespace.
		return errors.Join(serr, fmt.Errorf("back to the own network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	if serr != nil {
		return fmt.Errorf("start the receiver: %w", serr)
	}
	return nil
}

// ReceiveMigration runs the target's side of one migration on c into the
// images dir root: the restore is `stasis restore -D DIR -d` with the
// source's flags (docs/migration.md), started from this process (in its
// namespaces). pidFile, if set, gets the restored root's pid.
func ReceiveMigration(c net.Conn, root string, keyFile, pidFile string, log *slog.Logger) error {
	var key []byte
	if keyFile != "" {
		var err error
		if key, err = seal.LoadKey(keyFile); err != nil {
			return fmt.Errorf("migrate-receive: %w", err)
		}
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("migrate-receive: %w", err)
	}
	var post postCopy
	pidOf := func(pf string) (int, error) {
		b, err := os.ReadFile(pf)
		if err != nil {
			return 0, fmt.Errorf("restore: pidfile: %w", err)
		}
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
	// start starts `stasis restore -D dir -d ARGS` (goes, if set: the
	// restore waits there once its images are read, migrateGoFdFlag).
	start := func(dir string, args []string, goes *os.File) (*exec.Cmd, *bytes.Buffer, string, error) {
		pf := pidFile
		if pf == "" {
			pf = filepath.Join(dir, "restored.pid")
		}
		if slices.Contains(args, "--lazy-pages") {
			if err := post.start(dir, log); err != nil {
				return nil, nil, "", err
			}
		}
		a := append([]string{"restore", "-D", dir, "-d", "--pidfile", pf}, args...)
		if log.Enabled(context.Background(), slog.LevelDebug) {
			a = append(a, "-v4", "-o", "restore.log")
		}
		cmd := exec.Command("/proc/self/exe", a...)
		if goes != nil {
			cmd.Args = append(cmd.Args, "--stasis-go-fd", "3")
			cmd.ExtraFiles = []*os.File{goes}
		}
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			post.cancel()
			return nil, nil, "", fmt.Errorf("restore: %w", err)
		}
		return cmd, out, pf, nil
	}
	wait := func(cmd *exec.Cmd, out *bytes.Buffer, pf string) (int, error) {
		if err := cmd.Wait(); err != nil {
			post.cancel()
			return 0, fmt.Errorf("restore: %w: %s", err, strings.TrimSpace(out.String()))
		}
		return pidOf(pf)
	}
	restore := func(dir string, args []string) (int, error) {
		cmd, out, pf, err := start(dir, args, nil)
		if err != nil {
			return 0, err
		}
		return wait(cmd, out, pf)
	}
	// The final restore starts while the source still holds the tree: it
	// reads its images, then waits for the tree (and its pids) to be gone.
	prepare := func(dir string, args []string) (func() (int, error), func(), error) {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, nil, err
		}
		cmd, out, pf, err := start(dir, args, r)
		r.Close()
		if err != nil {
			w.Close()
			return nil, nil, err
		}
		run := func() (int, error) {
			waitReaped(dir, 2*time.Second)
			_, _ = w.Write([]byte{1}) // a restore that failed already says why
			w.Close()
			return wait(cmd, out, pf)
		}
		abort := func() {
			w.Close()
			_ = cmd.Wait()
			post.cancel()
		}
		return run, abort, nil
	}
	err := migrate.Receive(c, root, key, lockConns, restore, prepare, log)
	// The tree runs here already: what is left is its memory (the source
	// waits for this end of the stream to close).
	if perr := post.wait(); perr != nil {
		err = errors.Join(err, perr)
	}
	if err != nil {
		return fmt.Errorf("migrate-receive: %w", err)
	}
	return nil
}

// postCopy is the lazy-pages daemon of a migration's lazy restore
// (migrate --lazy-pages), run in the receiver: it fills the restored
// tree's memory from the images of every round while the tree runs.
type postCopy struct {
	done chan struct{}
	stop context.CancelFunc
	err  error
}

// start starts the daemon for the images at dir and returns once it
// listens.
func (p *postCopy) start(dir string, log *slog.Logger) error {
	ctx, stop := context.WithCancel(context.Background())
	ready := make(chan struct{})
	p.done, p.stop = make(chan struct{}), stop
	go func() {
		defer close(p.done)
		t0 := time.Now()
		st, err := LazyPages(ctx, LazyPagesOptions{ImagesDir: dir, Log: log, Ready: func() error { close(ready); return nil }})
		if err != nil {
			p.err = fmt.Errorf("post-copy: %w", err)
			return
		}
		log.Info("post-copy done", "pages", st.Pages, "faults", st.Faults, "background", st.Background, "took", time.Since(t0))
	}()
	select {
	case <-ready:
		return nil
	case <-p.done:
		return p.err
	}
}

// cancel stops a daemon whose restore failed.
func (p *postCopy) cancel() {
	if p.stop != nil {
		p.stop()
	}
}

// wait waits for the daemon, if one was started.
func (p *postCopy) wait() error {
	if p.done == nil {
		return nil
	}
	<-p.done
	p.stop()
	return p.err
}

// waitReaped waits, up to limit, while a pid of the images at dir is a
// zombie: on one machine, the tree the source has just killed, which its
// parent reaps at once (the restore refuses a pid still held); a live
// process holding one is not waited for (the restore says so).
func waitReaped(dir string, limit time.Duration) {
	d, err := images.Open(dir)
	if err != nil {
		return
	}
	ps, err := images.ReadAll(d, "pstree.img", func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} })
	if err != nil {
		return
	}
	deadline := time.Now().Add(limit)
	for _, e := range ps {
		for time.Now().Before(deadline) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", e.GetPid()))
			i := strings.LastIndexByte(string(b), ')')
			if err != nil || i < 0 || i+2 >= len(b) || (b[i+2] != 'Z' && b[i+2] != 'X') {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// lockConns makes the persistent network lock of the images at dir here,
// as their dump made on the source: the packets of their connections are
// dropped, not reset, from the moment their address arrives until the
// restore (which removes it) has them.
func lockConns(dir string) (func(), error) {
	d, err := images.Open(dir)
	if err != nil {
		return nil, err
	}
	inv := &inventory.InventoryEntry{}
	if err := d.ReadOne("inventory.img", inv); err != nil {
		return nil, err
	}
	ps, err := images.ReadAll(d, "pstree.img", func() *pstree.PstreeEntry { return &pstree.PstreeEntry{} })
	if err != nil || len(ps) == 0 {
		return nil, fmt.Errorf("lock the connections of %s: pstree: %w", dir, err)
	}
	var ents []*fdinfo.FileEntry
	if d.Has("files.img") {
		if ents, err = images.ReadAll(d, "files.img", func() *fdinfo.FileEntry { return &fdinfo.FileEntry{} }); err != nil {
			return nil, err
		}
	}
	conns, err := netlock.ConnsOf(slices.Values(ents))
	if err != nil || len(conns) == 0 {
		return func() {}, err
	}
	l := netlock.New(netlock.Nftables, int(ps[0].GetPid()), nil)
	l.SetRunID(inv.GetDumpCriuRunId())
	for _, c := range conns {
		if err := l.Add(c); err != nil {
			return nil, errors.Join(err, l.Release())
		}
	}
	if err := l.Persist(); err != nil {
		return nil, errors.Join(err, l.Release())
	}
	id := inv.GetDumpCriuRunId()
	return func() { _ = netlock.UnlockRun(id) }, nil
}
