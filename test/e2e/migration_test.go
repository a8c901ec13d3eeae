package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestPreDumpChain: a victim rewriting 5% of its 64 MiB a second is
// pre-dumped, pre-dumped again, and dumped with --track-mem, each with
// --prev-images-dir of the one before; between the iterations it maps a
// new area, unmaps half of it, moves another with mremap and forks a
// child. The later images hold only what changed (at most 20% of the
// first); the restore (pages from every level) is checked by the victim
// and its child, page by page.
func TestPreDumpChain(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "track", "64", "50")
	v.WaitReady(t)
	root := t.TempDir()
	dir := func(n int) string { return filepath.Join(root, strconv.Itoa(n)) }
	pid := strconv.Itoa(v.Pid)
	// When each iteration began and ended: the victim writes all along.
	began, ended := map[int]time.Time{}, map[int]time.Time{}
	stasisRun := func(n int, verb string, args ...string) testutil.Result {
		t.Helper()
		began[n] = time.Now()
		r := stasisRun(t, verb, args...)
		ended[n] = time.Now()
		return r
	}

	stasisRun(1, "pre-dump", "-t", pid, "-D", dir(1))
	first, _ := pagesOf(t, dir(1), v.Pid)
	if first < 16384 {
		t.Fatalf("first pre-dump saved %d pages of a 64 MiB victim", first)
	}
	assertRunning := func() { testutil.AssertRunning(t, v.Pid) }
	assertRunning()
	nextChange(t, v, 1) // new areas
	time.Sleep(300 * time.Millisecond)
	stasisRun(2, "pre-dump", "-t", pid, "-D", dir(2), "--prev-images-dir", "../1")
	assertRunning()
	nextChange(t, v, 2) // munmap, mremap
	nextChange(t, v, 3) // fork
	kids := testutil.Pids(testutil.TrackTree(t, v.Pid)[1:])
	time.Sleep(300 * time.Millisecond)
	blocks := func(n int) int64 {
		var sum int64
		names, _ := filepath.Glob(filepath.Join(dir(n), "pages-*.img"))
		for _, p := range names {
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err == nil {
				sum += st.Blocks
			}
		}
		return sum
	}
	before := blocks(2)
	stasisRun(3, "pre-dump", "-t", pid, "-D", dir(3), "--prev-images-dir", "../2", "--track-mem", "--auto-dedup")
	if after := blocks(2); after >= before {
		t.Errorf("--auto-dedup freed nothing in dir 2: %d blocks before, %d after", before, after)
	}
	time.Sleep(300 * time.Millisecond)
	stasisRun(4, "dump", "-t", pid, "-D", dir(4), "--prev-images-dir", "../3", "--track-mem")
	v.Reap(t)
	testutil.ReapTasks(t, kids)
	before = blocks(1)
	r := stasisRun(5, "dedup", "-D", dir(4))
	t.Logf("dedup: %s; dir 1: %d blocks, then %d", strings.TrimSpace(r.Stdout), before, blocks(1))
	if blocks(1) >= before {
		t.Errorf("stasis dedup freed nothing in dir 1")
	}

	for n := 2; n <= 4; n++ {
		own, parent := pagesOf(t, dir(n), v.Pid)
		// The victim rewrites 800 pages a second (50 per mille of 64
		// MiB) whatever the load: an iteration holds what it wrote from
		// the one before to this one, and the areas of the changes. On a
		// quiet machine that is well under 20% of the first; on a loaded
		// one, where each iteration takes seconds, as much as that time
		// allows (but a whole copy still shows: at most three quarters).
		window := ended[n].Sub(began[n-1])
		limit := max(first/5, uint64(800*window.Seconds())+1024)
		t.Logf("dir %d: %d pages saved, %d in parent (first: %d; %v since the previous iteration began: at most %d)", n, own, parent, first, window.Round(time.Millisecond), limit)
		switch {
		case limit > first*3/4:
			t.Logf("dir %d: the iterations were too slow to tell what changed from a whole copy: not checked", n)
		case own > limit:
			t.Errorf("dir %d saved %d pages of pid %d: more than the victim can have written in %v (%d), or 20%% of the first pre-dump's %d", n, own, v.Pid, window.Round(time.Millisecond), limit, first)
		}
		if parent == 0 {
			t.Errorf("dir %d has no page in parent", n)
		}
		if l, err := os.Readlink(filepath.Join(dir(n), "parent")); err != nil || l != "../"+strconv.Itoa(n-1) {
			t.Errorf("dir %d: parent link %q (%v), want ../%d", n, l, err, n-1)
		}
	}
	// The child appeared before the third iteration, which saved it
	// whole; the dump saves only what it wrote since.
	maps, _ := filepath.Glob(filepath.Join(dir(4), "pagemap-*.img"))
	if len(maps) != 2 {
		t.Fatalf("dir 4 has %d pagemaps, want the victim's and its child's", len(maps))
	}
	for _, k := range maps {
		cp, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(k), "pagemap-"), ".img"))
		if cp == v.Pid {
			continue
		}
		own, parent := pagesOf(t, dir(4), cp)
		t.Logf("child %d: %d pages saved, %d in parent", cp, own, parent)
		if own*5 > first || parent == 0 {
			t.Errorf("child %d: %d pages saved, %d in parent: want what it wrote since the third iteration only", cp, own, parent)
		}
	}
	testutil.RestoreDetached(t, dir(4), v)
	v.TermAndCheck(t)
	testutil.AssertContains(t, v.LogTail(), "changes: 3", "area B intact", "area C intact", "PASS")
}

// TestPreDumpBadParent: a --prev-images-dir that is missing or holds no
// complete dump fails the pre-dump and the dump before the tree is
// touched, names the dir, leaves nothing, and the victim runs on.
func TestPreDumpBadParent(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "track", "4", "50")
	v.WaitReady(t)
	root := t.TempDir()
	empty := filepath.Join(root, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, verb := range []string{"pre-dump", "dump"} {
		for _, prev := range []string{"../missing", "../empty"} {
			out := filepath.Join(root, "out-"+verb)
			r := testutil.Run(t, 30*time.Second, verb, "-t", strconv.Itoa(v.Pid), "-D", out, "--prev-images-dir", prev, "--track-mem")
			if r.Code != 1 || !strings.HasPrefix(r.Stderr, "Error: ") {
				t.Fatalf("%s with --prev-images-dir %s: want exit 1 and an error\n%s", verb, prev, r)
			}
			testutil.AssertContains(t, r.Stderr, "--prev-images-dir "+prev, filepath.Join(root, strings.TrimPrefix(prev, "../")), "not a previous dump")
			if ents, err := os.ReadDir(out); err == nil && len(ents) > 0 {
				t.Errorf("%s left %d files in %s", verb, len(ents), out)
			}
			testutil.AssertRunning(t, v.Pid)
		}
	}
	v.TermAndCheck(t)
}

// TestPageServerDropped: the page server's connection drops in the middle
// of the pages: the dump fails saying so, the victim runs on unharmed,
// and no partial images are left.
func TestPageServerDropped(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	v := testutil.StartVictim(t, "track", "16", "50")
	v.WaitReady(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		// Answer nothing useful: take 1 MiB of the session, then drop it.
		buf := make([]byte, 64<<10)
		got := 0
		for got < 1<<20 {
			// OPEN2 wants a byte back.
			n, err := c.Read(buf)
			if err != nil {
				break
			}
			if got == 0 {
				_, _ = c.Write([]byte{0})
			}
			got += n
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	}()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	for _, verb := range []string{"dump", "pre-dump"} {
		out := filepath.Join(t.TempDir(), "d")
		r := testutil.Run(t, 30*time.Second, verb, "-t", strconv.Itoa(v.Pid), "-D", out, "--page-server", "--address", "127.0.0.1", "--port", port,
			"-o", filepath.Join(t.TempDir(), "log"))
		if r.Code != 1 || !strings.HasPrefix(r.Stderr, "Error: ") {
			t.Fatalf("%s to a page server that drops the connection: want exit 1\n%s", verb, r)
		}
		testutil.AssertContains(t, r.Stderr, "page server")
		if ents, err := os.ReadDir(out); err == nil && len(ents) > 0 {
			t.Errorf("%s left %d files in %s", verb, len(ents), out)
		}
		testutil.AssertRunning(t, v.Pid)
		if verb == "dump" {
			// The second run finds nobody listening.
			l.Close()
		}
	}
	v.TermAndCheck(t)
}

// TestPageServerCRIU: stasis' page server protocol against criu 4.2's,
// both ways. A stasis pre-dump and dump --track-mem chain sends its
// pages to criu page-server (which checks every page in parent against
// its parent pagemap), and a criu dump sends to stasis page-server; both
// restore (stasis), each page checked by the victim.
func TestPageServerCRIU(t *testing.T) {
	testutil.RequireRoot(t)
	criu := testutil.CRIU(t)
	stasisBin := testutil.StasisBin(t)
	t.Parallel()

	t.Run("stasis-to-criu", func(t *testing.T) {
		v := testutil.StartVictim(t, "track", "16", "50")
		v.WaitReady(t)
		root := t.TempDir()
		d := func(name string) string {
			p := filepath.Join(root, name)
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
			return p
		}
		pid := strconv.Itoa(v.Pid)
		ps := startPageServer(t, criu, d("srv1"))
		began := time.Now()
		stasisRun(t, "pre-dump", "-t", pid, "-D", d("loc1"), "--page-server", "--address", "127.0.0.1", "--port", strconv.Itoa(ps.port))
		ps.wait(t)
		nextChange(t, v, 1)
		time.Sleep(300 * time.Millisecond)
		ps = startPageServer(t, criu, d("srv2"), "--prev-images-dir", "../srv1")
		stasisRun(t, "dump", "-t", pid, "-D", d("loc2"), "--prev-images-dir", "../loc1", "--track-mem",
			"--page-server", "--address", "127.0.0.1", "--port", strconv.Itoa(ps.port))
		ps.wait(t)
		window := time.Since(began)
		v.Reap(t)
		first, _ := pagesOf(t, d("srv1"), v.Pid)
		own, parent := pagesOf(t, d("srv2"), v.Pid)
		// The victim rewrites 200 pages a second (50 per mille of 16
		// MiB) whatever the load: the dump sends what it wrote since the
		// pre-dump and the change's area B, well under 20% of the first
		// on a quiet machine, as much as the time allows on a loaded one.
		limit := max(first/5, uint64(200*window.Seconds())+512)
		t.Logf("criu's page server: %d pages, then %d and %d in parent (%v from the pre-dump to the end of the dump: at most %d)", first, own, parent, window.Round(time.Millisecond), limit)
		if parent == 0 || own > limit && limit <= first*3/4 {
			t.Errorf("second dump sent %d pages and %d in parent (first %d; at most %d)", own, parent, first, limit)
		}
		mergeImages(t, d("loc2"), d("srv2"))
		testutil.RestoreDetached(t, d("srv2"), v)
		v.TermAndCheck(t)
		testutil.AssertContains(t, v.LogTail(), "changes: 1", "area B intact", "PASS")
	})

	t.Run("criu-to-stasis", func(t *testing.T) {
		v := testutil.StartVictim(t, "track", "16", "50")
		v.WaitReady(t)
		srv, loc := t.TempDir(), t.TempDir()
		ps := startPageServer(t, stasisBin, srv)
		r := testutil.RunCRIU(t, 60*time.Second, loc, "dump", "-t", strconv.Itoa(v.Pid), "-D", loc,
			"--page-server", "--address", "127.0.0.1", "--port", strconv.Itoa(ps.port))
		if r.Code != 0 {
			t.Fatalf("criu 4.2 dump to stasis' page server failed: %s\n%s", testutil.CriuErrors(r.Log), r)
		}
		ps.wait(t)
		v.Reap(t)
		if own, _ := pagesOf(t, srv, v.Pid); own < 4096 {
			t.Fatalf("stasis' page server got %d pages of a 16 MiB victim", own)
		}
		mergeImages(t, loc, srv)
		testutil.RestoreDetached(t, srv, v)
		v.TermAndCheck(t)
		testutil.AssertContains(t, v.LogTail(), "PASS")
	})
}

// TestPreDumpChainCRIURestore: criu 4.2 restores a chain stasis made
// (pre-dump, pre-dump, dump --track-mem): its pagemaps in parent and the
// parent links are criu's own format; the victim checks every page.
func TestPreDumpChainCRIURestore(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.CRIU(t)
	t.Parallel()
	v := testutil.StartVictim(t, "track", "16", "50")
	v.WaitReady(t)
	root := t.TempDir()
	dir := func(n int) string { return filepath.Join(root, strconv.Itoa(n)) }
	pid := strconv.Itoa(v.Pid)
	stasisRun(t, "pre-dump", "-t", pid, "-D", dir(1))
	nextChange(t, v, 1)
	stasisRun(t, "pre-dump", "-t", pid, "-D", dir(2), "--prev-images-dir", "../1")
	time.Sleep(200 * time.Millisecond)
	stasisRun(t, "dump", "-t", pid, "-D", dir(3), "--prev-images-dir", "../2", "--track-mem")
	v.Reap(t)
	if _, parent := pagesOf(t, dir(3), v.Pid); parent == 0 {
		t.Fatal("the dump has no page in parent")
	}
	testutil.CriuRestoreDetached(t, dir(3), v)
	v.TermAndCheck(t)
	testutil.AssertContains(t, v.LogTail(), "changes: 1", "area B intact", "PASS")
}
