package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	criu "github.com/checkpoint-restore/go-criu/v8"
	"github.com/checkpoint-restore/go-criu/v8/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// The criu RPC as go-criu v8 and runc drive it (criu swrk, criu service),
// served by stasis and compared message by message with the CRIU 4.2
// reference: the same replies with the same fields, the same
// notifications in the same order.

// noText drops the failure text fields: each tool words its errors.
func noText(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		l = strings.ReplaceAll(l, " cr_errmsg", "")
		out[i] = strings.ReplaceAll(l, " cr_errno", "")
	}
	return out
}

// TestSwrkVersionFeatures: VERSION answers 4.2 (go-criu: 40200, enough
// for runc, podman and containerd), FEATURE_CHECK answers every feature
// with what stasis can do (none of the three yet), CHECK succeeds, an
// unknown request type gets criu's EMPTY failure; each reply has the
// fields CRIU 4.2's has.
func TestSwrkVersionFeatures(t *testing.T) {
	// Not parallel: go-criu makes its socketpair without SOCK_CLOEXEC, and
	// a victim another test forks meanwhile inherits the swrk end (its dump
	// then rightly refuses a socket connected outside the tree).
	testutil.RequireRoot(t)
	bin := testutil.StasisBin(t)
	c := criu.MakeCriu()
	c.SetCriuPath(bin)
	v, err := c.GetCriuVersion()
	if err != nil || v != 40200 {
		t.Fatalf("go-criu GetCriuVersion: %d, %v; want 40200", v, err)
	}
	if ok, err := c.IsCriuAtLeast(31600); !ok || err != nil {
		t.Errorf("go-criu IsCriuAtLeast(31600): %v, %v", ok, err)
	}
	if _, err := c.FeatureCheck(&rpc.CriuFeatures{MemTrack: proto.Bool(true)}); err != nil {
		t.Errorf("go-criu FeatureCheck: %v", err)
	}

	all := &rpc.CriuFeatures{MemTrack: proto.Bool(true), LazyPages: proto.Bool(true), PidfdStore: proto.Bool(true)}
	reqs := []struct {
		name string
		req  *rpc.CriuReq
	}{
		{"VERSION", &rpc.CriuReq{Type: rpc.CriuReqType_VERSION.Enum()}},
		{"FEATURE_CHECK", &rpc.CriuReq{Type: rpc.CriuReqType_FEATURE_CHECK.Enum(), Features: all}},
		{"CHECK", &rpc.CriuReq{Type: rpc.CriuReqType_CHECK.Enum()}},
		{"type 99", &rpc.CriuReq{Type: rpc.CriuReqType(99).Enum()}},
		// Not a child of the swrk process, which criu's waitpid needs.
		{"WAIT_PID", &rpc.CriuReq{Type: rpc.CriuReqType_WAIT_PID.Enum(), Pid: proto.Uint32(uint32(os.Getpid()))}},
	}
	ours := map[string][]string{}
	for _, r := range reqs {
		sw := startSwrk(t, bin)
		seen, resp := sw.call(r.req)
		code := sw.exit()
		ours[r.name] = append(seen, fmt.Sprintf("exit %v", code == 0))
		t.Logf("stasis %s: %v (exit %d)", r.name, seen, code)
		if r.name == "FEATURE_CHECK" {
			f := resp.GetFeatures()
			// mem_track: as `check --feature mem_dirty_track` answers.
			tracks := exec.Command(bin, "check", "--feature", "mem_dirty_track").Run() == nil
			// lazy_pages: as `check --feature uffd-noncoop` answers.
			lazy := exec.Command(bin, "check", "--feature", "uffd-noncoop").Run() == nil
			if f.MemTrack == nil || f.LazyPages == nil || f.PidfdStore == nil || f.GetMemTrack() != tracks || f.GetLazyPages() != lazy || f.GetPidfdStore() {
				t.Errorf("FEATURE_CHECK features %v: want all three present, mem_track %v, lazy_pages %v, pidfd_store false (stasis has no pidfd store yet)", f, tracks, lazy)
			}
		}
		if r.name == "VERSION" && (resp.GetVersion().GetMajorNumber() != 4 || resp.GetVersion().GetMinorNumber() != 2) {
			t.Errorf("VERSION %v, want 4.2", resp.GetVersion())
		}
	}
	if !(ours["type 99"][0] == "EMPTY success=false cr_errmsg") {
		t.Errorf("unknown request type: %v, want an EMPTY failure with cr_errmsg", ours["type 99"])
	}

	ref := testutil.CRIU(t)
	for _, r := range reqs {
		sw := startSwrk(t, ref)
		seen, resp := sw.call(r.req)
		code := sw.exit()
		theirs := append(seen, fmt.Sprintf("exit %v", code == 0))
		t.Logf("criu 4.2 %s: %v (exit %d)", r.name, seen, code)
		if r.name == "FEATURE_CHECK" {
			f := resp.GetFeatures()
			t.Logf("criu 4.2 features on this kernel: mem_track %v, lazy_pages %v, pidfd_store %v", f.GetMemTrack(), f.GetLazyPages(), f.GetPidfdStore())
		}
		if !slices.Equal(noText(ours[r.name]), noText(theirs)) {
			t.Errorf("%s: stasis %v, criu 4.2 %v", r.name, ours[r.name], theirs)
		}
	}
}

// notifySequences dumps a counter with -R, dumps it again (killed),
// restores it with rst_sibling, all through the raw client, and returns
// the messages each call saw; the restored counter goes on and checks
// itself.
func notifySequences(t *testing.T, bin string, tool string) (dumpR, dump, restore []string) {
	v, status := counterVictim(t)
	dirR, dir := t.TempDir(), t.TempDir()
	sw := startSwrk(t, bin)
	dumpR, resp := sw.call(dumpReq(t, v.Pid, dirR, true))
	testutil.RemoveCRIULockAtEnd(t, filepath.Join(dirR, "dump.log"))
	if code := sw.exit(); !resp.GetSuccess() || code != 0 {
		t.Fatalf("%s dump -R: %v (exit %d)\n%s", tool, dumpR, code, logTail(dirR, "dump.log"))
	}
	testutil.AssertRunning(t, v.Pid)
	before := testutil.ReadCounter(t, status)
	testutil.WaitFor(t, 2*time.Second, "the counter to go on after the dump with leave_running", func() bool {
		return testutil.ReadCounter(t, status) > before+3
	})

	sw = startSwrk(t, bin)
	dump, resp = sw.call(dumpReq(t, v.Pid, dir, false))
	testutil.RemoveCRIULockAtEnd(t, filepath.Join(dir, "dump.log"))
	if code := sw.exit(); !resp.GetSuccess() || code != 0 {
		t.Fatalf("%s dump: %v (exit %d)\n%s", tool, dump, code, logTail(dir, "dump.log"))
	}
	v.Reap(t)
	from := testutil.ReadCounter(t, status)
	reset := resetCounterFile(t, status)

	start := time.Now()
	sw = startSwrk(t, bin)
	restore, resp = sw.call(restoreReq(t, dir))
	if code := sw.exit(); !resp.GetSuccess() || code != 0 {
		t.Fatalf("%s restore: %v (exit %d)\n%s", tool, restore, code, logTail(dir, "restore.log"))
	}
	if got := int(resp.GetRestore().GetPid()); got != v.Pid {
		t.Errorf("%s restore reply pid %d, want %d", tool, got, v.Pid)
	}
	t.Logf("%s: restore over swrk took %v", tool, time.Since(start).Round(time.Millisecond))
	v.Adopt(t)
	expectCountingFrom(t, status, from, reset)
	v.TermAndCheck(t)
	return withPid(dumpR, v.Pid), withPid(dump, v.Pid), withPid(restore, v.Pid)
}

// TestSwrkNotifySequence: the notifications of a dump with leave_running,
// a dump and a restore with rst_sibling, and the final replies, are CRIU
// 4.2's for the same calls; the counter continues after the restore.
func TestSwrkNotifySequence(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	ref := testutil.CRIU(t)
	var ours, theirs [3][]string
	t.Run("stasis", func(t *testing.T) {
		ours[0], ours[1], ours[2] = notifySequences(t, testutil.StasisBin(t), "stasis")
	})
	t.Run("criu", func(t *testing.T) {
		theirs[0], theirs[1], theirs[2] = notifySequences(t, ref, "criu 4.2")
	})
	if t.Failed() {
		return
	}
	for i, what := range []string{"DUMP leave_running", "DUMP", "RESTORE rst_sibling"} {
		t.Logf("%s: stasis %v", what, ours[i])
		if !slices.Equal(ours[i], theirs[i]) {
			t.Errorf("%s: stasis sent %v, criu 4.2 %v", what, ours[i], theirs[i])
		}
	}
}

// recorder is a go-criu Notify that records the callbacks it gets.
type recorder struct {
	criu.NoNotify
	seen []string
	// ppid is the parent of the restored root at post-restore, while the
	// swrk process still runs: with rst_sibling, the client.
	ppid int
}

func (r *recorder) PreDump() error       { r.seen = append(r.seen, "pre-dump"); return nil }
func (r *recorder) PostDump() error      { r.seen = append(r.seen, "post-dump"); return nil }
func (r *recorder) PreRestore() error    { r.seen = append(r.seen, "pre-restore"); return nil }
func (r *recorder) PostResume() error    { r.seen = append(r.seen, "post-resume"); return nil }
func (r *recorder) NetworkLock() error   { r.seen = append(r.seen, "network-lock"); return nil }
func (r *recorder) NetworkUnlock() error { r.seen = append(r.seen, "network-unlock"); return nil }
func (r *recorder) PostSetupNamespaces() error {
	r.seen = append(r.seen, "post-setup-namespaces")
	return nil
}
func (r *recorder) SetupNamespaces(p int32) error {
	r.seen = append(r.seen, fmt.Sprint("setup-namespaces ", p))
	return nil
}
func (r *recorder) PostRestore(p int32) error {
	r.seen = append(r.seen, fmt.Sprint("post-restore ", p))
	if st, err := testutil.ReadStat(int(p)); err == nil {
		r.ppid = st.PPid
	}
	return nil
}

// TestSwrkGoCriu: go-criu v8 with stasis as its criu binary, unchanged:
// Dump with leave_running (the counter goes on), Dump, Restore with
// rst_sibling (the root is the client's child from post-restore on); the
// callbacks come as go-criu names them, the same as with CRIU 4.2 driven
// the same way in the same test, and the counter resumes and checks
// itself.
func TestSwrkGoCriu(t *testing.T) {
	// Not parallel: go-criu makes its socketpair without SOCK_CLOEXEC, and
	// a victim another test forks meanwhile inherits the swrk end (its dump
	// then rightly refuses a socket connected outside the tree).
	testutil.RequireRoot(t)
	ref := testutil.CRIU(t)
	var ours, theirs []string
	t.Run("stasis", func(t *testing.T) { ours = goCriuFlow(t, testutil.StasisBin(t), true) })
	t.Run("criu", func(t *testing.T) { theirs = goCriuFlow(t, ref, false) })
	if t.Failed() {
		return
	}
	if !slices.Equal(ours, theirs) {
		t.Errorf("go-criu callbacks: stasis %v, criu 4.2 %v", ours, theirs)
	}
}

// goCriuFlow runs TestSwrkGoCriu's calls with bin and returns the
// callbacks of the three, the root's pid replaced by ROOT.
func goCriuFlow(t *testing.T, bin string, ours bool) []string {
	c := criu.MakeCriu()
	c.SetCriuPath(bin)
	v, status := counterVictim(t)
	opts := func(dir, log string) *rpc.CriuOpts {
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return &rpc.CriuOpts{ImagesDirFd: proto.Int32(int32(f.Fd())), LogLevel: proto.Int32(4), LogFile: proto.String(log)}
	}
	var all []string

	dirR, work := t.TempDir(), t.TempDir()
	o := opts(dirR, "dump.log")
	o.Pid, o.LeaveRunning = proto.Int32(int32(v.Pid)), proto.Bool(true)
	// podman and containerd read stats-dump and the log from the work dir.
	wf, err := os.Open(work)
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	o.WorkDirFd = proto.Int32(int32(wf.Fd()))
	var rec recorder
	start := time.Now()
	err = c.Dump(o, &rec)
	testutil.RemoveCRIULockAtEnd(t, filepath.Join(work, "dump.log"))
	if err != nil {
		t.Fatalf("go-criu Dump leave_running: %v\n%s", err, logTail(work, "dump.log"))
	}
	for _, f := range []string{"stats-dump", "dump.log"} {
		if _, err := os.Stat(filepath.Join(work, f)); err != nil {
			t.Errorf("work_dir_fd: %s not in the work dir: %v", f, err)
		}
	}
	t.Logf("go-criu dump (leave_running) took %v, callbacks %v", time.Since(start).Round(time.Millisecond), rec.seen)
	all = append(all, "dump -R:")
	all = append(all, rec.seen...)
	testutil.AssertRunning(t, v.Pid)
	after := testutil.ReadCounter(t, status)
	testutil.WaitFor(t, 2*time.Second, "the counter to go on", func() bool { return testutil.ReadCounter(t, status) > after+3 })
	if _, err := os.Stat(filepath.Join(dirR, "inventory.img")); err != nil {
		t.Errorf("leave_running dump left no inventory.img: %v", err)
	}

	dir := t.TempDir()
	o = opts(dir, "dump.log")
	o.Pid = proto.Int32(int32(v.Pid))
	rec = recorder{}
	err = c.Dump(o, &rec)
	testutil.RemoveCRIULockAtEnd(t, filepath.Join(dir, "dump.log"))
	if err != nil {
		t.Fatalf("go-criu Dump: %v\n%s", err, logTail(dir, "dump.log"))
	}
	all = append(all, "dump:")
	all = append(all, rec.seen...)
	v.Reap(t)
	from := testutil.ReadCounter(t, status)
	reset := resetCounterFile(t, status)
	rec = recorder{}
	o = opts(dir, "restore.log")
	o.RstSibling = proto.Bool(true)
	start = time.Now()
	if err := c.Restore(o, &rec); err != nil {
		t.Fatalf("go-criu Restore: %v\n%s", err, logTail(dir, "restore.log"))
	}
	t.Logf("go-criu restore (rst_sibling) took %v, callbacks %v", time.Since(start).Round(time.Millisecond), rec.seen)
	all = append(all, "restore:")
	all = append(all, rec.seen...)
	// criu forks the root with CLONE_PARENT: the client's child at once,
	// not adopted once the swrk process has exited.
	if rec.ppid != os.Getpid() {
		t.Errorf("rst_sibling: at post-restore the root's parent is %d, want the client %d", rec.ppid, os.Getpid())
	}
	v.Adopt(t)
	expectCountingFrom(t, status, from, reset)
	v.TermAndCheck(t)
	for i, l := range all {
		all[i] = strings.ReplaceAll(l, " "+strconv.Itoa(v.Pid), " ROOT")
	}
	if ours {
		want := []string{"dump -R:", "pre-dump", "post-dump", "dump:", "pre-dump", "post-dump", "restore:", "pre-restore", "post-restore ROOT", "post-resume"}
		if !slices.Equal(all, want) {
			t.Errorf("callbacks %v, want %v", all, want)
		}
	}
	return all
}

// TestSwrkService: `stasis service --address SOCK` serves a DUMP with
// leave_running from a client that connects to it (its fds are opened
// through /proc/PEER/fd of the connecting process); the counter goes on.
// With --daemon the command returns once the socket listens, and the
// daemon answers VERSION.
func TestSwrkService(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	bin := testutil.StasisBin(t)
	sock := filepath.Join(t.TempDir(), "criu_service.socket")
	svc := exec.Command(bin, "service", "--address", sock)
	var stderr strings.Builder
	svc.Stderr = &stderr
	if err := svc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Process.Kill(); svc.Wait() })
	testutil.WaitFor(t, 10*time.Second, "the service socket", func() bool {
		st, err := os.Stat(sock)
		return err == nil && st.Mode()&os.ModeSocket != 0
	})
	// criu 4.2's service socket is srw-rw-rw-: anyone may connect (and
	// stasis refuses dumps and restores to other users than root).
	if st, _ := os.Stat(sock); st.Mode().Perm() != 0o666 {
		t.Errorf("service socket mode %v, want criu's 0666", st.Mode())
	}

	v, status := counterVictim(t)
	dir := t.TempDir()
	cl := connectService(t, sock)
	seen, resp := cl.call(dumpReq(t, v.Pid, dir, true))
	if !resp.GetSuccess() {
		t.Fatalf("service DUMP: %v: %s\n%s\n%s", seen, resp.GetCrErrmsg(), logTail(dir, "dump.log"), stderr.String())
	}
	t.Logf("service DUMP: %v", seen)
	if want := []string{"NOTIFY success=true notify{pre-dump}", "NOTIFY success=true notify{query-ext-files}", "NOTIFY success=true notify{post-dump}", "DUMP success=true dump{restored=false}"}; !slices.Equal(seen, want) {
		t.Errorf("service DUMP messages %v, want %v", seen, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "inventory.img")); err != nil {
		t.Errorf("no inventory.img after the service's dump: %v", err)
	}
	testutil.AssertRunning(t, v.Pid)
	n := testutil.ReadCounter(t, status)
	testutil.WaitFor(t, 2*time.Second, "the counter to go on", func() bool { return testutil.ReadCounter(t, status) > n+3 })
	v.TermAndCheck(t)

	dsock := filepath.Join(t.TempDir(), "daemon.socket")
	pidfile := dsock + ".pid"
	// criu's socket is 0666 whatever the umask; --pidfile names the
	// daemon once `service --daemon` has returned.
	out, err := exec.Command("sh", "-c", `umask 077; exec "$0" service --daemon --address "$1" --pidfile "$2"`, bin, dsock, pidfile).CombinedOutput()
	if err != nil {
		t.Fatalf("service --daemon: %v\n%s", err, out)
	}
	if st, err := os.Stat(dsock); err != nil || st.Mode().Perm() != 0o666 {
		t.Errorf("daemon socket under umask 077: %v %v, want criu's 0666", st.Mode(), err)
	}
	if b, err := os.ReadFile(pidfile); err != nil {
		t.Errorf("--pidfile: %v", err)
	} else if pid, _ := strconv.Atoi(string(b)); pid <= 0 || !strings.Contains(readCmdline(pid), dsock) {
		t.Errorf("--pidfile names %q, not the daemon", b)
	}
	cl = connectService(t, dsock)
	seen, resp = cl.call(&rpc.CriuReq{Type: rpc.CriuReqType_VERSION.Enum()})
	if !resp.GetSuccess() || resp.GetVersion().GetMajorNumber() != 4 {
		t.Errorf("daemon VERSION: %v", seen)
	}
	cl.close()
	// The daemon, in a session of its own, was re-parented to the test
	// process (subreaper) when `service --daemon` exited: end it by pid.
	for _, pid := range testutil.Children(os.Getpid()) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(b), dsock) {
			p, _ := os.FindProcess(pid)
			p.Kill()
			p.Wait()
		}
	}
}

// TestSwrkBadRequests: requests stasis cannot serve get a failure reply
// naming why (or, for keep_open on a DUMP, criu's silent close), and the
// victim is untouched: still running, its counter going on, its
// self-check good; no images are left behind.
func TestSwrkBadRequests(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	bin := testutil.StasisBin(t)
	v, status := counterVictim(t)
	untouched := func(t *testing.T, dir string) {
		t.Helper()
		testutil.AssertRunning(t, v.Pid)
		n := testutil.ReadCounter(t, status)
		testutil.WaitFor(t, 2*time.Second, "the counter to go on", func() bool { return testutil.ReadCounter(t, status) > n+2 })
		if dir == "" {
			return
		}
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".log") {
				t.Errorf("%s left in the images dir", e.Name())
			}
		}
	}
	fails := func(t *testing.T, req *rpc.CriuReq, want rpc.CriuReqType, msg ...string) *swrkClient {
		t.Helper()
		sw := startSwrk(t, bin)
		seen, resp := sw.call(req)
		code := sw.exit()
		t.Logf("%v -> exit %d, cr_errmsg %q", seen, code, resp.GetCrErrmsg())
		if resp == nil || resp.GetSuccess() || resp.GetType() != want || code != 1 {
			t.Fatalf("reply %v (exit %d), want a %v failure and exit 1", seen, code, want)
		}
		testutil.AssertContains(t, resp.GetCrErrmsg(), msg...)
		return sw
	}

	t.Run("bad pid", func(t *testing.T) {
		dir := t.TempDir()
		sw := startSwrk(t, bin)
		_, resp := sw.call(dumpReq(t, testutil.FreePID(t), dir, false))
		sw.exit()
		if resp.GetSuccess() || resp.GetCrErrno() != 3 || resp.Dump == nil {
			t.Errorf("dump of a free pid: %v, want a DUMP failure with dump{}, cr_errno 3 (ESRCH) as criu", describeResp(resp))
		}
		untouched(t, dir)
	})
	t.Run("bad images dir fd", func(t *testing.T) {
		req := dumpReq(t, v.Pid, t.TempDir(), false)
		req.Opts.ImagesDirFd = proto.Int32(777)
		fails(t, req, rpc.CriuReqType_DUMP, "images_dir_fd 777", "no such file")
		untouched(t, "")
	})
	t.Run("unsupported option", func(t *testing.T) {
		dir := t.TempDir()
		req := dumpReq(t, v.Pid, dir, false)
		req.Opts.AutoDedup, req.Opts.LsmProfile = proto.Bool(true), proto.String("apparmor:x")
		fails(t, req, rpc.CriuReqType_DUMP, "auto_dedup", "lsm_profile", "not implemented")
		untouched(t, dir)
	})
	t.Run("unknown type", func(t *testing.T) {
		// criu 4.2 replies EMPTY, success false, and exits 255 ("RPC
		// error: Invalid req"); stasis too, with cr_errmsg.
		sw := startSwrk(t, bin)
		_, resp := sw.call(&rpc.CriuReq{Type: rpc.CriuReqType(42).Enum()})
		if code := sw.exit(); resp == nil || resp.GetSuccess() || resp.GetType() != rpc.CriuReqType_EMPTY || code != 255 {
			t.Errorf("unknown request type: reply %v, exit %d; want criu's EMPTY failure and exit 255", resp, code)
		}
		testutil.AssertContains(t, resp.GetCrErrmsg(), "invalid request type 42")
		fails(t, &rpc.CriuReq{Type: rpc.CriuReqType_CPUINFO_DUMP.Enum()}, rpc.CriuReqType_CPUINFO_DUMP, "CPUINFO_DUMP without options")
		fails(t, &rpc.CriuReq{Type: rpc.CriuReqType_PAGE_SERVER_CHLD.Enum()}, rpc.CriuReqType_PAGE_SERVER, "without options")
		untouched(t, "")
	})
	t.Run("malformed", func(t *testing.T) {
		sw := startSwrk(t, bin)
		sw.sendRaw([]byte{0x08, 0x01, 0x12, 0x7f, 0x01}) // opts claims 127 bytes
		resp := sw.recv()
		if code := sw.exit(); resp == nil || resp.GetType() != rpc.CriuReqType_EMPTY || resp.GetSuccess() || code == 0 {
			t.Errorf("malformed request: reply %v, exit %d; want an EMPTY failure", resp, code)
		}
		testutil.AssertContains(t, resp.GetCrErrmsg(), "malformed")
	})
	t.Run("oversized", func(t *testing.T) {
		// A DUMP just over stasis' 4 MiB bound (its external list); the
		// kernel takes a packet of up to about that much.
		dir := t.TempDir()
		req := dumpReq(t, v.Pid, dir, false)
		big := strings.Repeat("x", 1<<20)
		for i := 0; i < 4; i++ {
			req.Opts.External = append(req.Opts.External, big)
		}
		req.Opts.External = append(req.Opts.External, strings.Repeat("y", 32<<10))
		b, err := req.MarshalVT()
		if err != nil {
			t.Fatal(err)
		}
		sw := startSwrk(t, bin)
		// A packet that large needs a send buffer as large (root may).
		if err := unix.SetsockoptInt(sw.sk, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 16<<20); err != nil {
			t.Fatal(err)
		}
		sw.sendRaw(b)
		resp := sw.recv()
		if code := sw.exit(); resp == nil || resp.GetSuccess() || resp.GetType() != rpc.CriuReqType_EMPTY || code == 0 {
			t.Fatalf("oversized request: reply %v, exit %d; want an EMPTY failure", resp, code)
		}
		testutil.AssertContains(t, resp.GetCrErrmsg(), "bytes, more than")
		untouched(t, dir)
	})
	t.Run("keep_open dump", func(t *testing.T) {
		dir := t.TempDir()
		req := dumpReq(t, v.Pid, dir, true)
		req.KeepOpen = proto.Bool(true)
		sw := startSwrk(t, bin)
		seen, _ := sw.call(req)
		if code := sw.exit(); !slices.Equal(seen, []string{"EOF"}) || code == 0 {
			t.Errorf("keep_open on DUMP: %v, exit %d; want criu's close without a reply", seen, code)
		}
		untouched(t, dir)
	})
	t.Run("script error", func(t *testing.T) {
		dir := t.TempDir()
		sw := startSwrk(t, bin)
		sw.answer = func(script string) *rpc.CriuReq {
			if script == "post-dump" {
				return &rpc.CriuReq{Type: rpc.CriuReqType_NOTIFY.Enum(), NotifySuccess: proto.Bool(false)}
			}
			return nil
		}
		seen, resp := sw.call(dumpReq(t, v.Pid, dir, false))
		sw.exit()
		if resp.GetSuccess() {
			t.Fatalf("post-dump answered with failure: %v, want a failed dump", seen)
		}
		testutil.AssertContains(t, resp.GetCrErrmsg(), "post-dump", "script error", "resumed")
		untouched(t, dir)
	})
	t.Run("client gone at post-dump", func(t *testing.T) {
		// The images are complete when post-dump is sent: a client that
		// leaves then still gets the tree resumed and the images removed.
		dir := t.TempDir()
		sw := startSwrk(t, bin)
		b, _ := dumpReq(t, v.Pid, dir, false).MarshalVT()
		sw.sendRaw(b)
		ack, _ := (&rpc.CriuReq{Type: rpc.CriuReqType_NOTIFY.Enum(), NotifySuccess: proto.Bool(true)}).MarshalVT()
		for {
			r := sw.recv()
			if r == nil || r.GetType() != rpc.CriuReqType_NOTIFY {
				t.Fatalf("no post-dump notification: %v", r)
			}
			if r.GetNotify().GetScript() == "post-dump" {
				break
			}
			sw.sendRaw(ack)
		}
		if code := sw.exit(); code != 1 {
			t.Errorf("swrk whose client left at post-dump exited %d, want 1", code)
		}
		untouched(t, dir)
	})
	t.Run("client gone", func(t *testing.T) {
		dir := t.TempDir()
		sw := startSwrk(t, bin)
		b, _ := dumpReq(t, v.Pid, dir, false).MarshalVT()
		sw.sendRaw(b)
		if r := sw.recv(); r.GetNotify().GetScript() != "pre-dump" {
			t.Fatalf("first message %v, want the pre-dump notification", describeResp(r))
		}
		if code := sw.exit(); code != 1 {
			t.Errorf("swrk whose client left mid-dump exited %d, want 1", code)
		}
		untouched(t, dir)
	})
	v.TermAndCheck(t)
}

// TestSwrkInheritFd: the way runc keeps a container's stdio pipes, with
// go-criu unchanged and stasis found as `criu` on $PATH (a symlink, so
// argv[0] is criu): a victim writing numbers into the test's pipe (its
// stdout) is dumped without naming it, as runc dumps a container whose
// stdio are its pipes (stasis names the root's stdio pipes held outside
// the tree external), and restored with go-criu's
// AddInheritFd (inherit_fd: the server's fd 3); it goes on writing into
// the same pipe, no number lost or repeated, and passes its self-check.
func TestSwrkInheritFd(t *testing.T) {
	testutil.RequireRoot(t)
	bindir := t.TempDir()
	if err := os.Symlink(testutil.StasisBin(t), filepath.Join(bindir, "criu")); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bindir+":"+os.Getenv("PATH"))
	v := startSeqoutOnPipe(t)

	c := criu.MakeCriu() // "criu" from $PATH: the symlink
	dir := t.TempDir()
	df, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	opts := &rpc.CriuOpts{ImagesDirFd: proto.Int32(int32(df.Fd())), Pid: proto.Int32(int32(v.pid)),
		LogLevel: proto.Int32(4), LogFile: proto.String("dump.log")}
	if err := c.Dump(opts, nil); err != nil {
		t.Fatalf("go-criu Dump of a victim whose stdout is the test's pipe %s: %v\n%s", v.key, err, logTail(dir, "dump.log"))
	}
	<-v.waited
	c.AddInheritFd(v.key, v.w)
	opts = &rpc.CriuOpts{ImagesDirFd: proto.Int32(int32(df.Fd())), RstSibling: proto.Bool(true),
		LogLevel: proto.Int32(4), LogFile: proto.String("restore.log")}
	if err := c.Restore(opts, nil); err != nil {
		t.Fatalf("go-criu Restore with inherit_fd %s: %v\n%s", v.key, err, logTail(dir, "restore.log"))
	}
	testutil.Track(t, []int{v.pid})
	v.finish(t)
}

// TestSwrkContainerNotify: a tree in pid, uts and ipc namespaces of its
// own (the flat container of ns_test.go), dumped and restored over swrk
// with rst_sibling: the restore's notifications add setup-namespaces
// (with the root's pid) and post-setup-namespaces, as criu 4.2's do, and
// the container checks itself after.
func TestSwrkContainerNotify(t *testing.T) {
	t.Parallel()
	testutil.RequireRoot(t)
	ref := testutil.CRIU(t)
	seqs := map[string][2][]string{}
	for _, tool := range []struct{ name, bin string }{{"stasis", testutil.StasisBin(t)}, {"criu 4.2", ref}} {
		t.Run(strings.Fields(tool.name)[0], func(t *testing.T) {
			c := startContainer(t, "flat")
			want := nsPids(t, c.init)
			dir := t.TempDir()
			sw := startSwrk(t, tool.bin)
			dump, resp := sw.call(dumpReq(t, c.init, dir, false))
			if code := sw.exit(); !resp.GetSuccess() || code != 0 {
				t.Fatalf("%s dump: %v (exit %d)\n%s", tool.name, dump, code, logTail(dir, "dump.log"))
			}
			c.waitGone(t)
			sw = startSwrk(t, tool.bin)
			restore, resp := sw.call(restoreReq(t, dir))
			if code := sw.exit(); !resp.GetSuccess() || code != 0 {
				t.Fatalf("%s restore: %v (exit %d)\n%s", tool.name, restore, code, logTail(dir, "restore.log"))
			}
			host := int(resp.GetRestore().GetPid())
			t.Cleanup(func() {
				unix.Kill(host, unix.SIGKILL)
				var ws unix.WaitStatus
				unix.Wait4(host, &ws, unix.WNOHANG, nil)
			})
			testutil.WaitFor(t, 10*time.Second, "the restored init to run untraced", func() bool {
				st, err := testutil.Status(host)
				return err == nil && st["TracerPid"] == "0"
			})
			seqs[tool.name] = [2][]string{withPid(dump, host), withPid(restore, host)}
			t.Logf("%s: dump %v; restore %v", tool.name, seqs[tool.name][0], seqs[tool.name][1])
			checkRestoredContainer(t, c, host, want)
		})
	}
	if t.Failed() {
		return
	}
	for i, what := range []string{"DUMP", "RESTORE rst_sibling"} {
		if ours, theirs := seqs["stasis"][i], seqs["criu 4.2"][i]; !slices.Equal(ours, theirs) {
			t.Errorf("%s: stasis sent %v, criu 4.2 %v", what, ours, theirs)
		}
	}
}

func readCmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(b)
}
