package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// Real programs connected by pipes, checkpointed mid-stream: each test
// runs the job once uninterrupted for the reference, then again under a
// dump and restore, and wants the same result.

// runPipeline starts `sh -c script` (own session, output to a log), waits
// until busy says the job is mid-way, dumps the whole tree (killing it),
// restores it and waits for sh to exit 0.
func runPipeline(t *testing.T, script string, busy func(tree []testutil.Task) bool) {
	t.Helper()
	v := testutil.StartProgram(t, program(t, "sh"), "-c", script)
	var tree []testutil.Task
	testutil.WaitFor(t, 20*time.Second, "the job to be mid-way", func() bool {
		ts, err := testutil.Tree(v.Pid)
		if err != nil {
			return false
		}
		tree = ts
		return busy(ts)
	})
	t.Logf("dumping the job mid-way: %s", testutil.FormatTree(tree))
	dir := t.TempDir()
	start := time.Now()
	dumpTree(t, v, tree, dir)
	t.Logf("dumped %d processes in %v", len(tree), time.Since(start).Round(time.Millisecond))
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	if code := v.Wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("the restored job exited with %d\n%s", code, v.LogTail())
	}
}

// hasComms reports whether every name is the comm of a live task of tree.
func hasComms(tree []testutil.Task, names ...string) bool {
	for _, n := range names {
		found := false
		for _, ts := range tree {
			found = found || (ts.Comm == n && !ts.Zombie())
		}
		if !found {
			return false
		}
	}
	return true
}

func fileSize(p string) int64 {
	st, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return st.Size()
}

// writeTextTree fills dir with n files of pseudo-random words (about size
// bytes each, compressible like text), the same for a given seed.
func writeTextTree(t *testing.T, dir string, n, size int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	words := []string{"stasis", "checkpoint", "restore", "pipe", "process", "kernel", "memory", "thread",
		"signal", "descriptor", "namespace", "socket", "terminal", "image", "page", "tree"}
	for i := 0; i < n; i++ {
		var b bytes.Buffer
		for b.Len() < size {
			b.WriteString(words[rng.IntN(len(words))])
			if rng.IntN(12) == 0 {
				fmt.Fprintf(&b, " %d\n", rng.Uint32())
			} else {
				b.WriteByte(' ')
			}
		}
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%10), fmt.Sprintf("f%04d.txt", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPipelineTarBzip2: `tar cf - DIR | bzip2 > out` dumped while both
// run, restored, and out is byte-identical to an uninterrupted run's.
func TestPipelineTarBzip2(t *testing.T) {
	testutil.RequireRoot(t)
	work := t.TempDir()
	writeTextTree(t, filepath.Join(work, "src"), 300, 100<<10, 1)
	script := func(out string) string {
		return fmt.Sprintf("cd %s && tar --sort=name -cf - src | bzip2 -9 > %s", work, out)
	}
	ref := filepath.Join(work, "ref.tar.bz2")
	start := time.Now()
	if b, err := exec.Command("sh", "-c", script(ref)).CombinedOutput(); err != nil {
		t.Fatalf("reference run: %v\n%s", err, b)
	}
	t.Logf("uninterrupted run: %v", time.Since(start).Round(time.Millisecond))
	out := filepath.Join(work, "out.tar.bz2")
	runPipeline(t, script(out), func(tree []testutil.Task) bool {
		return hasComms(tree, "tar", "bzip2") && fileSize(out) > 0
	})
	want, _ := os.ReadFile(ref)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatalf("out.tar.bz2 is %d bytes, differs from the uninterrupted run's %d bytes", len(got), len(want))
	}
	t.Logf("out.tar.bz2: %d bytes, identical", len(got))
}

// TestPipelineSort: `sort` of a 40 MB file with a small buffer (so that
// it spills to temporary files and merges them, on 2 threads), dumped
// mid-way; the output equals an uninterrupted run's.
func TestPipelineSort(t *testing.T) {
	testutil.RequireRoot(t)
	work := t.TempDir()
	writeTextTree(t, filepath.Join(work, "in"), 1, 40<<20, 2)
	in := filepath.Join(work, "in", "d00", "f0000.txt")
	script := func(out string) string {
		return fmt.Sprintf("cd %s && LC_ALL=C sort -S 8M --parallel=2 -T %s %s -o %s", work, work, in, out)
	}
	ref := filepath.Join(work, "ref.txt")
	start := time.Now()
	if b, err := exec.Command("sh", "-c", script(ref)).CombinedOutput(); err != nil {
		t.Fatalf("reference run: %v\n%s", err, b)
	}
	t.Logf("uninterrupted run: %v", time.Since(start).Round(time.Millisecond))
	out := filepath.Join(work, "out.txt")
	runPipeline(t, script(out), func(tree []testutil.Task) bool {
		if !hasComms(tree, "sort") {
			return false
		}
		tmp, _ := filepath.Glob(filepath.Join(work, "sort*"))
		return len(tmp) >= 2 // spilled at least twice: mid-way
	})
	want, _ := os.ReadFile(ref)
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatalf("sorted output is %d bytes, differs from the uninterrupted run's %d bytes", len(got), len(want))
	}
	if n := strings.Count(string(got), "\n"); n < 1000 {
		t.Fatalf("only %d lines sorted", n)
	}
}
