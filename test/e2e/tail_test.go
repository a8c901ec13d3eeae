package e2e

import (
	"os/exec"
	"slices"
	"syscall"
	"testing"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// tailCase is one scenario of the long tail of kernel objects (issue 15):
// a victim that sets one object up and checks itself after a dump, kill
// and restore. criu 4.2's result on a fresh copy of the same victim is
// logged beside stasis'.
type tailCase struct {
	scenario string
	// args after the scenario; "DIR" is replaced by a fresh temp dir
	// for each run.
	args []string
	// dump and restore are stasis' extra flags (criu gets the same).
	dump, restore []string
	// name is the subtest's name when it is not the scenario's;
	// setup, if set, is applied to the victim's command before it starts.
	name  string
	setup func(*exec.Cmd)
	// rawImages: the dump has a network namespace's raw images (ifaddr,
	// route, nftables: criu's ip/nft dumps), which neither show nor crit
	// decode, so they are not checked.
	rawImages bool
	// serial: not run in parallel with the other cases, for those that
	// make ptys: the index of a pty the kill gives back could be taken
	// by another case's pty before the restore wants it again.
	serial bool
	// refused: stasis' dump must fail with this in its error and leave
	// the victim running as it was.
	refused string
}

// runTail runs the cases of one victim, in parallel, and beside the
// other parallel tests when none of its cases is serial.
func runTail(t *testing.T, victim string, cases []tailCase) {
	testutil.RequireRoot(t)
	if !slices.ContainsFunc(cases, func(c tailCase) bool { return c.serial }) {
		t.Parallel()
	}
	for _, c := range cases {
		name := c.name
		if name == "" {
			name = c.scenario
		}
		t.Run(name, func(t *testing.T) {
			if !c.serial {
				t.Parallel()
			}
			args := func() []string {
				a := []string{c.scenario}
				for _, s := range c.args {
					if s == "DIR" {
						s = t.TempDir()
					}
					a = append(a, s)
				}
				return a
			}
			// Both victims' trees are killed at the end: a refused dump
			// leaves their children (a traced child, one sharing its fs
			// or fd table) running, which a SIGTERM to the root does not end.
			w := testutil.StartVictimWith(t, c.setup, victim, args()...)
			w.WaitReady(t)
			testutil.TrackTree(t, w.Pid)
			t.Logf("criu 4.2 on %s %s: %s", victim, c.scenario, testutil.CriuOutcome(t, w, c.dump...))

			v := testutil.StartVictimWith(t, c.setup, victim, args()...)
			v.WaitReady(t)
			testutil.TrackTree(t, v.Pid)
			dir := t.TempDir()
			if c.refused != "" {
				testutil.AssertContains(t, testutil.DumpFail(t, v.Pid, dir, c.dump...), c.refused)
				testutil.AssertRunning(t, v.Pid)
				v.TermAndCheck(t)
				t.Logf("stasis on %s %s: refused, as it must be", victim, c.scenario)
				return
			}
			tree := testutil.MustTree(t, v.Pid)
			testutil.Dump(t, v.Pid, dir, c.dump...)
			v.Reap(t)
			testutil.ReapTasks(t, testutil.Pids(tree[1:]))
			if !c.rawImages {
				testutil.CheckImages(t, dir)
			}
			testutil.RestoreDetached(t, dir, v, c.restore...)
			v.TermAndCheck(t)
			t.Logf("stasis on %s %s: PASS", victim, c.scenario)
		})
	}
}

// TestUnixTail: unix sockets whose file was replaced, moved or removed,
// queues of unconnected, shut-down and orphaned sockets, an epoll in
// flight, a datagram pair across processes (unixtail.c).
func TestUnixTail(t *testing.T) {
	runTail(t, "unixtail", []tailCase{
		{scenario: "fifo", args: []string{"DIR"}},
		{scenario: "rmdir", args: []string{"DIR"}},
		{scenario: "renamed", args: []string{"DIR"}},
		{scenario: "rebound", args: []string{"DIR"}},
		{scenario: "unconn", args: []string{"DIR"}},
		{scenario: "shut", args: []string{"DIR"}},
		{scenario: "gone", args: []string{"DIR"}},
		{scenario: "dgpair", args: []string{"DIR"}},
		{scenario: "epoll", args: []string{"DIR"}},
	})
}

// TestFileTail: epoll items whose number was closed or reused, an fd on
// a symbolic link itself, fanotify's group flags, an inotify watch on a
// deleted file, pidfds of processes gone before the dump (filetail.c).
func TestFileTail(t *testing.T) {
	runTail(t, "filetail", []tailCase{
		{scenario: "epoll-closed", args: []string{"DIR"}},
		{scenario: "epoll-reused", args: []string{"DIR"}},
		{scenario: "opath", args: []string{"DIR"}},
		{scenario: "fanotify", args: []string{"DIR"}},
		{scenario: "inotify-gone", args: []string{"DIR"}},
		{scenario: "pidfd-dead", args: []string{"DIR"}},
		{scenario: "flock-owner", args: []string{"DIR"}, dump: []string{"-l"}, restore: []string{"-l"}},
		{scenario: "mapmode", args: []string{"DIR"}},
		{scenario: "netns", args: []string{"DIR"}},
		{scenario: "proc-dead", args: []string{"DIR"}},
		{scenario: "shared-fdt", args: []string{"DIR"}},
		// the same in a network namespace of the victim's own
		{name: "netns-own", scenario: "netns", args: []string{"DIR"}, rawImages: true, setup: func(c *exec.Cmd) {
			c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWNET}
		}},
	})
}

// TestInetTail: UDP shutdown states, IPv6 options, SO_REUSEPORT groups, a
// closed TCP socket keeping its port (inettail.c).
func TestInetTail(t *testing.T) {
	runTail(t, "inettail", []tailCase{
		{scenario: "udp-shut"},
		{scenario: "ipv6opts"},
		{scenario: "reuseport"},
		{scenario: "closed"},
		{scenario: "tcpclose", dump: []string{"--tcp-close"}},
		// criu 4.2 refuses it too: the held bytes cannot be read back.
		{scenario: "udp-cork", refused: "corked UDP socket (UDP_CORK) holding a datagram back"},
	})
}

// TestTTYTail: a pty slave's owner and mode, a slave hung up by the
// close of its master (ttytail.c).
func TestTTYTail(t *testing.T) {
	runTail(t, "ttytail", []tailCase{
		{scenario: "owner", serial: true},
		{scenario: "slave-only", serial: true},
		{scenario: "devtty", serial: true},
		{scenario: "devtty-member", serial: true},
	})
}
