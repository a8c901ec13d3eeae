package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// crossCase is a victim that both stasis and criu 4.2 checkpoint here,
// with what the harness does around the checkpoint.
type crossCase struct {
	victimCase
	flags []string                                                // given to both tools' dump and restore
	after func(t *testing.T, v *testutil.Victim)                  // after the restore, before the check
	start func(t *testing.T) (*testutil.Victim, func(*testing.T)) // own start; returns its after
	// fromCRIU is why criu 4.2's dump of the victim cannot be restored
	// as it must be (criu refuses it, or its images lack what the victim
	// checks); toCRIU why criu 4.2 cannot restore the victim, from its
	// own dump either. "" if it can.
	fromCRIU, toCRIU string
	// critOnly: a victim only TestCrit42 dumps (criu 4.2 refuses it).
	critOnly bool
	// serial: the case shares something with others (a pty index, a
	// port, the network lock's table, a timing) and runs alone.
	serial bool
}

func crossCases() []crossCase {
	var out []crossCase
	for _, c := range victimCases() {
		if c.label == "" {
			c.label = c.name
		}
		x := crossCase{victimCase: c}
		switch c.label {
		case "fdkind-io_uring", "fdkind-userfaultfd", "fdkind-perf_event", "fdkind-bpf-map", "fdkind-pidfd":
			continue // refused by criu at dump (and by stasis, but for an idle io_uring: uring_test.go)
		case "shmem-sysv":
			// criu 4.2 refuses a System V segment of an IPC namespace the
			// tree does not own ("doesn't live in IPC ns").
			continue
		case "signals":
			x.serial = true
			x.before = func(t *testing.T, v *testutil.Victim) { sendPendingUSR2(t, v) }
			x.after = sendUSR1
		case "pipe":
			x.serial = true // SIGIO timing
			x.toCRIU = "criu sets O_ASYNC on a pipe through its own fd number: SIGIO carries si_fd 3, not 64"
		}
		out = append(out, x)
	}
	dirArg := func(t *testing.T) []string { return []string{t.TempDir()} }
	noArgs := func(*testing.T) []string { return nil }
	out = append(out,
		crossCase{fromCRIU: "criu's eventfd entry has no EFD_SEMAPHORE", toCRIU: "criu restores an eventfd without EFD_SEMAPHORE",
			victimCase: victimCase{label: "anonfd", name: "anonfd",
				args:   func(*testing.T) []string { return []string{strconv.Itoa(os.Getpid())} },
				before: func(*testing.T, *testutil.Victim) { time.Sleep(120 * time.Millisecond) }},
			after: func(t *testing.T, v *testutil.Victim) {
				v.Signal(t, unix.SIGUSR1)
				testutil.WaitFor(t, 2*time.Second, "SIGUSR1 pending in ShdPnd", func() bool {
					st, err := testutil.Status(v.Pid)
					return err == nil && pendingBit(st["ShdPnd"], int(unix.SIGUSR1))
				})
			}},
		crossCase{victimCase: victimCase{label: "inotify", name: "inotify", args: dirArg},
			toCRIU: "the IN_IGNORED of a watch removed after criu's restore does not arrive"},
		crossCase{victimCase: victimCase{label: "netlink", name: "netlink", args: noArgs}},
		crossCase{victimCase: victimCase{label: "pty", name: "pty", args: noArgs}, serial: true,
			fromCRIU: "criu does not dump the bytes pending in a pty",
			toCRIU:   "criu loses a pty's pending bytes and exclusive mode"},
		crossCase{victimCase: victimCase{label: "memfd", name: "memfd", args: noArgs},
			toCRIU: "criu cannot seal a memfd it mapped writable (Cannot apply seals on memfd)"},
		crossCase{victimCase: victimCase{label: "threads", name: "threads", args: func(*testing.T) []string { return []string{"20"} }}},
		crossCase{victimCase: victimCase{label: "timers", name: "timers", args: noArgs}, serial: true,
			toCRIU: "criu restores a blocked timer signal without its overrun count",
			after:  func(*testing.T, *testutil.Victim) { time.Sleep(1500 * time.Millisecond) }},
		crossCase{victimCase: victimCase{label: "unixsk", name: "unixsk", args: func(t *testing.T) []string { return []string{"all", t.TempDir()} }},
			fromCRIU: "criu 4.2 refuses control messages in a queue"},
		crossCase{victimCase: victimCase{label: "locks", name: "locks", args: dirArg}, flags: []string{"--file-locks"}},
		crossCase{victimCase: victimCase{label: "ghost", name: "ghost", args: func(t *testing.T) []string {
			return []string{t.TempDir(), "small", "sparse", "mmap", "flags", "dirfd"}
		}}},
		// criu 4.2 locks with nftables here (no iptables binary); each
		// tool's restore removes the other's lock (inet CRIU-RUNID).
		crossCase{victimCase: victimCase{label: "tcp", name: "tcpsrv"}, serial: true, flags: []string{"--tcp-established", "--network-lock", "nftables"},
			start: func(t *testing.T) (*testutil.Victim, func(*testing.T)) {
				v, tc, _ := startTCPServer(t, "127.0.0.1")
				return v, func(t *testing.T) { finishStream(t, tc) }
			}},
		crossCase{victimCase: victimCase{label: "tree", name: "tree", args: noArgs}, toCRIU: criuLeaderless},
		crossCase{victimCase: victimCase{label: "tree-memfd", name: "tree", args: func(*testing.T) []string { return []string{"memfd"} }},
			toCRIU: criuLeaderless},
		crossCase{victimCase: victimCase{label: "cowtree", name: "cowtree", args: func(*testing.T) []string { return []string{"16", "3"} }}},
		crossCase{victimCase: victimCase{label: "creds", name: "creds"},
			fromCRIU: "without CAP_SYS_RESOURCE criu cannot read the rlimits of a task that changed its uid",
			start: func(t *testing.T) (*testutil.Victim, func(*testing.T)) {
				return credsVictim(t), nil
			}},
		crossCase{victimCase: victimCase{label: "inet", name: "inet"}, serial: true, start: func(t *testing.T) (*testutil.Victim, func(*testing.T)) {
			v, p := startInet(t)
			return v, func(t *testing.T) { askAll(t, p) }
		}},
	)
	return out
}

// criuLeaderless: criu 4.2's restore of a session whose leader had exited
// (tree.c's session E) gives its members the wrong parent: the orphans of
// criu's helper task go to criu's reaper, not to the tree's subreaper.
const criuLeaderless = "the members of a session whose leader exited get criu's reaper as parent, not the tree's subreaper"

// startCross starts the case's victim, ready to be dumped.
func (c crossCase) startCross(t *testing.T) (*testutil.Victim, func(*testing.T, *testutil.Victim)) {
	after := c.after
	var v *testutil.Victim
	if c.start != nil {
		var a func(*testing.T)
		if v, a = c.start(t); a != nil {
			after = func(t *testing.T, _ *testutil.Victim) { a(t) }
		}
	} else {
		v = testutil.StartVictim(t, c.name, c.args(t)...)
		v.WaitReady(t)
	}
	if c.before != nil {
		c.before(t, v)
	}
	return v, after
}

// TestCrossCRIUToStasis dumps each victim with criu 4.2 and restores it
// with stasis; the victim then checks its own state. The cases that share
// something run alone, in TestCrossCRIUToStasisShared.
func TestCrossCRIUToStasis(t *testing.T) {
	t.Parallel()
	crossCRIUToStasis(t, false)
}

func TestCrossCRIUToStasisShared(t *testing.T) { crossCRIUToStasis(t, true) }

func crossCRIUToStasis(t *testing.T, serial bool) {
	crossAll(t, serial, func(c crossCase) string { return c.fromCRIU }, "criu 4.2's dump loses what this victim checks: ",
		func(t *testing.T, v *testutil.Victim, tree []testutil.Task, dir string, flags []string) {
			testutil.CriuDump(t, v.Pid, dir, flags...)
			v.Reap(t)
			testutil.ReapTasks(t, testutil.Pids(tree[1:]))
			testutil.ShowAll(t, dir)
			// stasis show prints what crit 4.2 shows for each image
			// criu wrote, stats-dump included.
			copyCRIUStats(t, dir, "stats-dump")
			n, _ := testutil.CheckWithCrit42(t, dir)
			t.Logf("crit 4.2: %d images of criu's dump shown as stasis shows them", n)
			testutil.RestoreDetached(t, dir, v, flags...)
		})
}

// TestCrossStasisToCRIU dumps each victim with stasis and restores it with
// criu 4.2 (the cases that share something: TestCrossStasisToCRIUShared).
func TestCrossStasisToCRIU(t *testing.T) {
	t.Parallel()
	crossStasisToCRIU(t, false)
}

func TestCrossStasisToCRIUShared(t *testing.T) { crossStasisToCRIU(t, true) }

func crossStasisToCRIU(t *testing.T, serial bool) {
	crossAll(t, serial, func(c crossCase) string { return c.toCRIU }, "criu 4.2's own restore fails this victim: ",
		func(t *testing.T, v *testutil.Victim, tree []testutil.Task, dir string, flags []string) {
			dumpTree(t, v, tree, dir, flags...)
			n, same := testutil.CheckWithCrit42(t, dir)
			t.Logf("crit 4.2: %d images decoded, %d re-encoded identical", n, same)
			testutil.CriuRestoreDetached(t, dir, v, flags...)
		})
}

// crossAll runs the cross cases that are serial or not: the victim is
// started, checkpointed and restored by crossOver, and checks itself in
// its restored tree. A case for which skip gives a reason is skipped with
// it. The cases that are not serial run side by side (each has its own
// victim, pids and images), the serial ones one after the other.
func crossAll(t *testing.T, serial bool, skip func(crossCase) string, why string,
	crossOver func(t *testing.T, v *testutil.Victim, tree []testutil.Task, dir string, flags []string)) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	for _, c := range crossCases() {
		if c.serial != serial {
			continue
		}
		t.Run(c.label, func(t *testing.T) {
			if reason := skip(c); reason != "" {
				t.Skip(why + reason)
			}
			if !c.serial {
				t.Parallel()
			}
			v, after := c.startCross(t)
			tree := testutil.MustTree(t, v.Pid)
			crossOver(t, v, tree, t.TempDir(), c.flags)
			got := testutil.WaitTree(t, v.Pid, tree, false, 5*time.Second)
			testutil.Track(t, testutil.Pids(got[1:]), v.Pid)
			if after != nil {
				after(t, v)
			}
			time.Sleep(50 * time.Millisecond)
			v.TermAndCheck(t)
		})
	}
}

// TestCrit42 checks stasis' images with crit 4.2 (testutil.Crit42), for
// the victims the cross test TestCrossStasisToCRIU does not dump (it
// checks its own dumps the same way): crit decodes every image (but the raw
// ones: pages, and stasis-checksums.json, which criu ignores), encodes the
// JSON back to the same bytes, and `crit show` prints what `stasis show`
// prints (hex addresses, flags and states by name, devices, IP addresses).
func TestCrit42(t *testing.T) {
	t.Parallel()
	crit42(t, false)
}

// TestCrit42Shared: TestCrit42's cases that share something, one at a
// time.
func TestCrit42Shared(t *testing.T) { crit42(t, true) }

func crit42(t *testing.T, serial bool) {
	testutil.RequireRoot(t)
	testutil.Crit42(t)
	var (
		mu                       sync.Mutex
		images, identical, dumps int
	)
	count := func(n, same int) {
		mu.Lock()
		images, identical, dumps = images+n, identical+same, dumps+1
		mu.Unlock()
	}
	t.Cleanup(func() {
		t.Logf("crit 4.2 over %d dumps: %d images decoded, %d re-encoded identical", dumps, images, identical)
	})
	for _, c := range crit42Cases() {
		if c.toCRIU == "" && !c.critOnly {
			continue // TestCrossStasisToCRIU checks its dump with crit 4.2
		}
		if c.serial != serial {
			continue
		}
		t.Run(c.label, func(t *testing.T) {
			if !c.serial {
				t.Parallel()
			}
			v, _ := c.startCross(t)
			tree := testutil.MustTree(t, v.Pid)
			testutil.Track(t, testutil.Pids(tree[1:]))
			dir := t.TempDir()
			testutil.Dump(t, v.Pid, dir, append([]string{"-R"}, c.flags...)...)
			n, same := testutil.CheckWithCrit42(t, dir)
			t.Logf("crit 4.2: %d images decoded, %d re-encoded identical", n, same)
			count(n, same)
		})
	}
	if serial {
		return
	}
	t.Run("container", func(t *testing.T) {
		t.Parallel()
		// pid, uts and ipc namespaces with System V objects (ns_test.go).
		c := startContainer(t, "flat")
		dir := t.TempDir()
		testutil.Dump(t, c.init, dir, "-R")
		n, same := testutil.CheckWithCrit42(t, dir)
		t.Logf("crit 4.2: %d images decoded, %d re-encoded identical", n, same)
		count(n, same)
	})
}

// crit42Cases are the cross victims and the kinds of state only stasis
// dumps here (criu 4.2 refuses them, or the cross tests leave them out):
// a System V segment, a fanotify group, packet and raw sockets, seccomp
// strict mode, leases.
func crit42Cases() []crossCase {
	out := crossCases()
	start := func(name string, args func(t *testing.T) []string) func(t *testing.T) (*testutil.Victim, func(*testing.T)) {
		return func(t *testing.T) (*testutil.Victim, func(*testing.T)) {
			v := testutil.StartVictim(t, name, args(t)...)
			v.WaitReady(t)
			return v, nil
		}
	}
	for _, c := range []crossCase{
		{victimCase: victimCase{label: "shmem-sysv"}, start: start("shmem", func(*testing.T) []string { return []string{"sysv"} })},
		{victimCase: victimCase{label: "fanotify"}, start: start("fanotify", func(t *testing.T) []string { return []string{t.TempDir(), fanotifyMount(t)} })},
		{victimCase: victimCase{label: "rawsk"}, serial: true, start: start("rawsk", func(t *testing.T) []string {
			port := freePort(t, "127.0.0.1")
			if port >= 65535 {
				port = 40000
			}
			return []string{"all", strconv.Itoa(port)}
		})},
		{victimCase: victimCase{label: "strict"}, start: start("strict", func(*testing.T) []string { return nil })},
		{victimCase: victimCase{label: "lease"}, serial: true, flags: []string{"-l"},
			start: func(t *testing.T) (*testutil.Victim, func(*testing.T)) {
				v, _ := startLease(t, "active", -1)
				return v, nil
			}},
	} {
		c.critOnly = true
		out = append(out, c)
	}
	return out
}

// TestCrit42CRIUImages: for what criu 4.2 itself writes, `stasis show`
// prints what `crit show` prints: a criu dump of a container and the
// stats-restore of a criu restore (TestCrossCRIUToStasis checks its dump
// of every other victim the same way; crit's decode | encode too).
func TestCrit42CRIUImages(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	testutil.Crit42(t)
	var images, dumps int
	t.Run("container", func(t *testing.T) {
		// pid, uts and ipc namespaces with System V objects (ns_test.go).
		c := startContainer(t, "flat")
		dir := t.TempDir()
		r := testutil.RunCRIU(t, 30*time.Second, dir, "dump", "-t", strconv.Itoa(c.init), "-D", dir, "-R", "--network-lock", "nftables")
		if r.Code != 0 {
			t.Fatalf("criu dump -R of the container failed: %s\n%s", testutil.CriuErrors(nsLogText(r.Log)), r)
		}
		n, _ := testutil.CheckWithCrit42(t, dir)
		images, dumps = images+n, dumps+1
	})
	t.Run("stats-restore", func(t *testing.T) {
		v := testutil.StartVictim(t, "counter", filepath.Join(t.TempDir(), "count"))
		v.WaitReady(t)
		dir := t.TempDir()
		testutil.CriuDump(t, v.Pid, dir)
		v.Reap(t)
		testutil.CriuRestoreDetached(t, dir, v)
		copyCRIUStats(t, dir, "stats-dump", "stats-restore")
		n, _ := testutil.CheckWithCrit42(t, dir)
		images, dumps = images+n, dumps+1
		v.TermAndCheck(t)
	})
	t.Logf("crit 4.2 and stasis show agree over %d images of %d criu dumps", images, dumps)
}

// copyCRIUStats copies the stats files criu 4.2 wrote into its work dir
// (testutil.RunCRIU's) into the images dir, for crit and stasis show.
func copyCRIUStats(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(testutil.CRIUWorkDir(t), n))
		if err != nil {
			t.Fatalf("criu wrote no %s: %v", n, err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
