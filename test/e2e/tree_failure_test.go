package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/mm"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/stasis-cr/stasis/internal/images"
	"github.com/stasis-cr/stasis/internal/mem"
	"github.com/stasis-cr/stasis/internal/pstree"
	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestDumpDuringChurn: dumps of a process that creates and joins threads
// without pause, or forks and reaps children without pause, race with
// clone() and exit(). Each of 10 dumps must succeed with a consistent tree
// (every parent of the images in the images, a core image for every thread)
// that restores and goes on churning: a thread or child caught in exit is
// left out or dumped as the zombie it becomes (a seize of an exiting task
// fails with ESRCH or EPERM). The victim finally checks that no thread or
// child ever saw a wrong tid, parent, argument or memory, and that none is
// left (churn.c).
func TestDumpDuringChurn(t *testing.T) {
	testutil.RequireRoot(t)
	for _, mode := range []string{"threads", "forks"} {
		t.Run(mode, func(t *testing.T) {
			status := filepath.Join(t.TempDir(), "cycles")
			v := testutil.StartVictim(t, "churn", status, mode)
			killForkingTree(t, v)
			v.WaitReady(t)
			progress := func(what string) {
				t.Helper()
				n := testutil.ReadCounter(t, status)
				testutil.WaitFor(t, 5*time.Second, what, func() bool { return testutil.ReadCounter(t, status) > n+10 })
			}
			for i := 0; i < 10; i++ {
				dir := t.TempDir()
				r := testutil.Run(t, 25*time.Second, "dump", "-t", strconv.Itoa(v.Pid), "-D", dir, "-v4", "-o", filepath.Join(t.TempDir(), "dump.log"))
				if r.Code != 0 {
					t.Fatalf("dump %d of a churning tree failed\n%s", i, r)
				}
				pids := checkChurnImages(t, dir, v.Pid)
				t.Logf("dump %d: %d process(es) in %v", i, len(pids), r.Took.Round(time.Millisecond))
				v.Reap(t)
				testutil.ReapTasks(t, pids[1:])
				testutil.RestoreDetached(t, dir, v)
				progress("the restored victim to churn on")
			}
			v.TermAndCheck(t)
		})
	}
}

// checkChurnImages checks the tree in pstree.img: the root first, every
// other process's parent among them, a core image for every thread. It
// returns the pids.
func checkChurnImages(t *testing.T, dir string, root int) []int {
	t.Helper()
	es := testutil.ImageTree(t, dir)
	if len(es) == 0 || int(es[0].GetPid()) != root {
		t.Fatalf("pstree.img does not start with the root %d: %v", root, es)
	}
	in := map[uint32]bool{}
	var pids []int
	for _, e := range es {
		in[e.GetPid()] = true
		pids = append(pids, int(e.GetPid()))
	}
	for _, e := range es[1:] {
		if !in[e.GetPpid()] {
			t.Errorf("pstree.img: pid %d has parent %d, which is not in the images", e.GetPid(), e.GetPpid())
		}
	}
	for _, e := range es {
		if len(e.GetThreads()) == 0 {
			t.Errorf("pstree.img: pid %d has no threads", e.GetPid())
		}
		for _, tid := range e.GetThreads() {
			if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("core-%d.img", tid))); err != nil {
				t.Errorf("thread %d of pid %d: %v", tid, e.GetPid(), err)
			}
		}
	}
	return pids
}

// TestRestoreTreeFailsHalfway: a restore of the 20-process tree that fails
// late, on the 10th process of pstree.img, leaves no task behind: no pid of
// the tree (nor the leaders' pids that helpers take) is held afterwards and
// the test process got no stray child. stasis's checksum manifest is
// removed first (it would refuse the damaged images up front). Damages: the
// 10th process's core image truncated to 0 bytes; its cs register set to 0;
// one of its file mappings pointing at a file id that does not exist. The
// intact images then restore and pass.
func TestRestoreTreeFailsHalfway(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v, tree := startTreeVictim(t, "tree")
	leaderD := logPid(t, v, `leaderless group D ([0-9]+)`)
	leaderE := logPid(t, v, `session E ([0-9]+)`)
	good := t.TempDir()
	dumpTree(t, v, tree, good)
	pids := testutil.ImagePids(t, good)
	if len(pids) < 10 {
		t.Fatalf("pstree.img has %d processes", len(pids))
	}
	tenth := pids[9]
	core, mmImg := fmt.Sprintf("core-%d.img", tenth), fmt.Sprintf("mm-%d.img", tenth)
	t.Logf("damaging the images of pid %d, the 10th of %v", tenth, pids)

	damages := []struct {
		name  string
		apply func(t *testing.T, dir string)
		names []string // the message names one of these
	}{
		{"core-truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(fileOf(dir, core), 0); err != nil {
				t.Fatal(err)
			}
		}, []string{core}},
		{"core-cs-0", func(t *testing.T, dir string) {
			d, err := images.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			c := &criu_core.CoreEntry{}
			if err := d.ReadOne(core, c); err != nil {
				t.Fatal(err)
			}
			regs := c.GetThreadInfo().GetGpregs()
			if regs == nil {
				t.Fatalf("%s has no gpregs", core)
			}
			regs.Cs = proto.Uint64(0)
			if err := d.Write(core, c); err != nil {
				t.Fatal(err)
			}
		}, []string{strconv.Itoa(tenth), core}},
		{"mm-bad-file-id", func(t *testing.T, dir string) {
			d, err := images.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			m := &mm.MmEntry{}
			if err := d.ReadOne(mmImg, m); err != nil {
				t.Fatal(err)
			}
			changed := false
			for _, vma := range m.GetVmas() {
				if vma.GetStatus()&(mem.FilePrivate|mem.FileShared) != 0 {
					vma.Shmid = proto.Uint64(0x7ffffff0)
					changed = true
					break
				}
			}
			if !changed {
				t.Fatalf("%s has no file mapping", mmImg)
			}
			if err := d.Write(mmImg, m); err != nil {
				t.Fatal(err)
			}
		}, []string{strconv.Itoa(tenth), mmImg}},
	}
	for _, dmg := range damages {
		t.Run(dmg.name, func(t *testing.T) {
			dir := imageDirNoChecksums(t, good)
			dmg.apply(t, dir)
			msg := testutil.RestoreFail(t, dir)
			assertAny(t, msg, dmg.names...)
			assertTreeGone(t, tree, leaderD, leaderE)
		})
	}

	t.Log("restoring the intact images")
	restoreTree(t, good, v, tree)
	v.TermAndCheck(t)
	assertTreeGone(t, tree, leaderD, leaderE)
}

// TestRestoreThreadsFailsLate: a restore of a multithreaded process that
// fails after its threads exist (a file it holds was removed meanwhile)
// reaps every task and returns at once: waiting for a leader before its
// threads would spend the whole zombie deadline and leave the leader to
// the test process as a zombie.
func TestRestoreThreadsFailsLate(t *testing.T) {
	testutil.RequireRoot(t)
	held := filepath.Join(t.TempDir(), "held")
	if err := os.WriteFile(held, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	ready := filepath.Join(t.TempDir(), "ready")
	script := `import threading, time, sys
f = open(sys.argv[1])
for _ in range(3):
    threading.Thread(target=time.sleep, args=(1000,), daemon=True).start()
open(sys.argv[2], "w").close()
time.sleep(1000)
`
	v := testutil.StartProgram(t, program(t, "python3"), "-c", script, held, ready)
	v.Ready = ready
	v.WaitReady(t)
	dir := t.TempDir()
	testutil.Dump(t, v.Pid, dir)
	v.Reap(t)
	if err := os.Remove(held); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	msg := testutil.RestoreFail(t, dir)
	testutil.AssertContains(t, msg, held)
	t.Logf("restore failed: %s", msg)
	// The fault costs the whole zombie deadline on top of the restore:
	// a failed restore that takes that long waited for it.
	if took := time.Since(start); took >= pstree.ZombieWait {
		t.Errorf("the failed restore took %v (the zombie deadline is %v): the rollback waited for a leader before its threads", took, pstree.ZombieWait)
	}
	testutil.AssertNoTask(t, v.Pid)
}

// TestDumpTreeFailsLate: a dump that fails late, when every task is seized
// and its state read (the images dir is a 128 KiB tmpfs: writing the
// images runs out of space), leaves every thread of every task of a
// multi-process, multithreaded tree as it was: running, not traced, the
// same threads, each with its signal mask and pending signals (assertUntouched);
// each victim's self-check then passes (threads.c checks the registers of
// its spinning workers, that no futex wait failed with EINTR, its pending
// signals; tree.c its shape, memory and zombies). A dump to a good dir
// then works.
func TestDumpTreeFailsLate(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()

	// sh with two children, each a threads victim with 20 workers.
	t.Run("threads", func(t *testing.T) {
		bin := testutil.BuildVictim(t, "threads")
		r1, r2 := filepath.Join(t.TempDir(), "ready1"), filepath.Join(t.TempDir(), "ready2")
		script := `"$0" "$1" 20 & a=$!; "$0" "$2" 20 & b=$!; wait $a; x=$?; wait $b; y=$?; echo "threads exited $x $y"; [ $x = 0 ] && [ $y = 0 ]`
		v := testutil.StartProgram(t, program(t, "sh"), "-c", script, bin, r1, r2)
		testutil.WaitFor(t, 20*time.Second, "both threads victims to be ready", func() bool {
			return fileExists(r1) && fileExists(r2)
		})
		tree := testutil.TrackTree(t, v.Pid)
		if len(tree) != 3 {
			t.Fatalf("tree of sh: %d tasks, want sh and 2 threads victims\n%s", len(tree), testutil.FormatTree(tree))
		}
		before := snapshotTree(t, v.Pid)
		failLateDump(t, v.Pid)
		assertUntouched(t, before)

		testutil.Dump(t, v.Pid, t.TempDir(), "-R")
		assertUntouched(t, before)
		for _, x := range tree[1:] {
			if err := unix.Kill(x.Pid, unix.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		if code := v.Wait(t, 30*time.Second); code != 0 {
			t.Fatalf("a threads victim's self-check failed (sh exited %d)\n%s", code, v.LogTail())
		}
	})

	t.Run("tree", func(t *testing.T) {
		v, _ := startTreeVictim(t, "tree")
		before := snapshotTree(t, v.Pid)
		failLateDump(t, v.Pid)
		assertUntouched(t, before)
		v.TermAndCheck(t)
	})
}

// failLateDump runs a dump of pid into a 128 KiB tmpfs, which it fills
// before it is done, and checks that it fails for that reason.
func failLateDump(t *testing.T, pid int) {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=128k,mode=0700"); err != nil {
		t.Fatalf("mount a tmpfs on %s: %v", mnt, err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	msg := testutil.DumpFail(t, pid, filepath.Join(mnt, "images"))
	testutil.AssertContains(t, msg, "no space left on device")
}
