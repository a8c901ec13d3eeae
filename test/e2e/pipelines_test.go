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
	v.Comm = testutil.Comm(v.Pid) // sh may have exec'ed the job
	dir := t.TempDir()
	start := time.Now()
	testutil.Dump(t, v.Pid, dir)
	took := time.Since(start)
	v.Reap(t)
	// The job forks on: the dump may hold more processes than tree.
	pids := testutil.ImagePids(t, dir)
	testutil.ReapTasks(t, pids[1:])
	t.Logf("dumped %d processes in %v", len(pids), took.Round(time.Millisecond))
	testutil.CheckImages(t, dir)
	testutil.RestoreDetached(t, dir, v)
	if code := v.Wait(t, 5*time.Minute); code != 0 { // generous: parallel tests share the CPUs
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
	t.Parallel()
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
// it spills to some ten temporary files and merges them, on 2 threads),
// dumped mid-way (after its first spill: the window is most of the run,
// which is under a second on a quiet machine); the output equals an
// uninterrupted run's.
func TestPipelineSort(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	work := t.TempDir()
	writeTextTree(t, filepath.Join(work, "in"), 1, 40<<20, 2)
	in := filepath.Join(work, "in", "d00", "f0000.txt")
	script := func(out string) string {
		return fmt.Sprintf("cd %s && LC_ALL=C sort -S 4M --parallel=2 -T %s %s -o %s", work, work, in, out)
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
		return len(tmp) >= 1 // spilled: mid-way
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

// cProjectOutput is what the program of writeCProject(n) prints: its
// unsigned long arithmetic done in uint64, instead of a reference build
// (as long again as the build under test, on a loaded CI machine).
func cProjectOutput(n int) string {
	var s uint64
	for i := 0; i < n; i++ {
		x := uint64(i)
		for j := 0; j < 1500; j++ {
			x = x*uint64(3+2*(j%17)) + x>>(1+j%13) + uint64(i*j)
		}
		s += x
	}
	return fmt.Sprintf("%d\n", s)
}

// writeCProject writes a C program of n source files, each slow enough to
// compile (a long function), whose main prints the sum of their results.
func writeCProject(t *testing.T, dir string, n int) {
	t.Helper()
	var mainc bytes.Buffer
	mainc.WriteString("#include <stdio.h>\n")
	for i := 0; i < n; i++ {
		var src bytes.Buffer
		fmt.Fprintf(&src, "unsigned long f%d(unsigned long x) {\n", i)
		for j := 0; j < 1500; j++ {
			fmt.Fprintf(&src, "\tx = x * %d + (x >> %d) + %d;\n", 3+2*(j%17), 1+j%13, i*j)
		}
		src.WriteString("\treturn x;\n}\n")
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d.c", i)), src.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&mainc, "unsigned long f%d(unsigned long);\n", i)
	}
	mainc.WriteString("int main(void) {\n\tunsigned long s = 0;\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&mainc, "\ts += f%d(%d);\n", i, i)
	}
	mainc.WriteString("\tprintf(\"%lu\\n\", s);\n\treturn 0;\n}\n")
	objs := make([]string, n)
	for i := range objs {
		objs[i] = fmt.Sprintf("f%d.o", i)
	}
	mk := fmt.Sprintf("prog: main.o %s\n\tcc -o $@ $^\n%%.o: %%.c\n\tcc -O2 -c -o $@ $<\n", strings.Join(objs, " "))
	if err := os.WriteFile(filepath.Join(dir, "main.c"), mainc.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Makefile"), []byte(mk), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPipelineMake: `make -j2` building a 12-file C project, dumped while
// compilers run (make's jobserver pipe, with its tokens, included),
// finishes after the restore with a binary that prints what its sources
// compute.
func TestPipelineMake(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	program(t, "make")
	work := t.TempDir()
	writeCProject(t, work, 12)
	want := []byte(cProjectOutput(12))
	runPipeline(t, "exec make -s -j2 -C "+work, func(tree []testutil.Task) bool {
		objs, _ := filepath.Glob(filepath.Join(work, "*.o"))
		return hasComms(tree, "make", "cc1") && len(objs) >= 3
	})
	got, err := exec.Command(filepath.Join(work, "prog")).Output()
	if err != nil {
		t.Fatalf("the binary built across the restore: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("prog prints %q, its sources compute %q", got, want)
	}
}

// TestPipelineGitClone: `git clone` of a local repository over file://
// (git and git-upload-pack talking through pipes, index-pack writing the
// pack) dumped mid-way; the clone completes, passes git fsck and has the
// source's HEAD and files.
func TestPipelineGitClone(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	program(t, "git")
	work := t.TempDir()
	src := filepath.Join(work, "src")
	writeRandomTree(t, src, 400, 150<<10, 3)
	git := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"}, args...)...)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, b)
		}
		return strings.TrimSpace(string(b))
	}
	git(src, "init", "-q")
	git(src, "add", ".")
	git(src, "commit", "-q", "-m", "data")
	head := git(src, "rev-parse", "HEAD")
	dst := filepath.Join(work, "dst")
	runPipeline(t, fmt.Sprintf("exec git clone -q --no-local file://%s %s", src, dst), func(tree []testutil.Task) bool {
		return len(tree) >= 3 && fileExists(filepath.Join(dst, ".git"))
	})
	if got := git(dst, "rev-parse", "HEAD"); got != head {
		t.Fatalf("clone HEAD %s, source %s", got, head)
	}
	git(dst, "fsck", "--full", "--strict")
	if b, err := exec.Command("diff", "-r", "-x", ".git", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("checked-out files differ: %v\n%s", err, b)
	}
}

// writeRandomTree fills dir with n files of size incompressible bytes.
func writeRandomTree(t *testing.T, dir string, n, size int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 9))
	b := make([]byte, size)
	for i := 0; i < n; i++ {
		for j := 0; j+8 <= len(b); j += 8 {
			v := rng.Uint64()
			for k := 0; k < 8; k++ {
				b[j+k] = byte(v >> (8 * k))
			}
		}
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%10), fmt.Sprintf("f%04d.bin", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
