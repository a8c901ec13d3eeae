package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pstree"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestJava: OpenJDK 17 running an HTTP server (com.sun.net.httpserver,
// testdata/StasisHTTP.java) with 32 pool threads, 16 counting workers, G1's
// GC threads and the JIT's compiler threads (70 threads in all), its hot
// method compiled by C2 before the dump. A keep-alive client and a busy one
// keep their connections across a CRIU 4.2 round trip (for the figures),
// then a stasis one. After stasis' restore the JVM verifies itself
// (/check: heap, compiled code, workers, a GC, a fresh JIT compilation);
// its signal handlers work (a thread dump on SIGQUIT or by jcmd's attach,
// its own SIGSEGV handling all along, the shutdown hook on SIGTERM).
//
// "perfdata": the JVM keeps its counters in a shared file mapping,
// /tmp/hsperfdata_root/PID; jstat reads that file from outside, and sees
// the restored JVM's GC counts move on. "noperfdata": -XX:-UsePerfData,
// no such mapping. A JVM that starts with perf data on deletes the
// hsperfdata files of dead pids (/tmp is fixed in HotSpot on Linux,
// java.io.tmpdir does not move it), that of a dumped JVM too, which its
// restore needs: every other JVM these tests start (the noperfdata case,
// jcmd, jstat) runs with -XX:-UsePerfData, and so the cases run in
// parallel.
func TestJava(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	java := program(t, "java")
	javac := program(t, "javac")
	classes := t.TempDir()
	if out, err := exec.Command(javac, "-d", classes, filepath.Join("testdata", "StasisHTTP.java")).CombinedOutput(); err != nil {
		t.Fatalf("javac StasisHTTP.java: %v\n%s", err, out)
	}
	criu := haveCRIU(t)
	for _, perf := range []bool{true, false} {
		name := "perfdata"
		if !perf {
			name = "noperfdata"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testJava(t, java, classes, perf, criu)
		})
	}
}

var (
	c2Hot   = regexp.MustCompile(`(?m)^.*\s4\s+StasisHTTP::hot\b`)
	jitCold = regexp.MustCompile(`(?m)^.*StasisHTTP::cold\b`)
)

func testJava(t *testing.T, java, classes string, perf, criu bool) {
	work := t.TempDir()
	port := freePort(t, "127.0.0.1")
	ready, hook := filepath.Join(work, "ready"), filepath.Join(work, "hook")
	args := []string{"-XX:+UseG1GC", "-XX:ParallelGCThreads=4", "-XX:ConcGCThreads=2", "-Xmx256m",
		"-XX:+PrintCompilation", "-Djava.io.tmpdir=" + work, "-Djava.net.preferIPv4Stack=true",
		// The kept connection is idle from the dump to after the restore.
		"-Dsun.net.httpserver.idleInterval=3600", "-cp", classes}
	if !perf {
		args = append(args, "-XX:-UsePerfData")
	}
	args = append(args, "StasisHTTP", strconv.Itoa(port), ready, hook)
	v := testutil.StartProgram(t, java, args...)
	v.Ready = ready
	v.WaitReady(t)
	waitListening(t, v, port)
	perfFile := fmt.Sprintf("/tmp/hsperfdata_root/%d", v.Pid)
	t.Cleanup(func() { os.Remove(perfFile) }) // a killed JVM leaves it
	if m := mapsWith(t, v.Pid, "hsperfdata"); perf != (m != "") {
		t.Fatalf("hsperfdata mapping %q with UsePerfData %v", m, perf)
	}
	if !c2Hot.MatchString(readFile(v.Log)) {
		t.Fatalf("C2 has not compiled StasisHTTP::hot before the dump\n%s", v.LogTail())
	}
	threads := threadNames(t, v.Pid)
	for _, want := range []string{"VM Thread", "C2 CompilerThre", "C1 CompilerThre", "G1 Conc#0", "GC Thread#0", "Signal Dispatch", "stasis-worker-1", "pool-1-thread-3"} {
		if !slices.Contains(threads, want) {
			t.Fatalf("no JVM thread %q before the dump: %q", want, threads)
		}
	}

	c := dialServer(t, port)
	br := bufio.NewReader(c)
	get := func(path, prefix string) string {
		t.Helper()
		body, err := httpGet(c, br, path)
		if err != nil {
			t.Fatalf("kept connection: %v\n%s", err, v.LogTail())
		}
		if !strings.HasPrefix(body, prefix) {
			t.Fatalf("GET %s: %q, want %q...\n%s", path, body, prefix, v.LogTail())
		}
		return body
	}
	get("/hello", "hello ")
	get("/check", "ok ")
	q := dialServer(t, port)
	qr := bufio.NewReader(q)
	busy := startBusy(func(i int64) error {
		body, err := httpGet(q, qr, "/hello")
		if err == nil && !strings.HasPrefix(body, "hello ") {
			err = fmt.Errorf("GET /hello: %q", body)
		}
		return err
	})
	// CRIU 4.2's round trip first, for the figures: the two dumps see the
	// same JVM (the checks after stasis' restore grow its heap).
	var cr ckptRun
	if criu {
		cr, _ = appRoundTrip(t, v, byCRIU, "--tcp-established")
		get("/hello", "hello ")
	}
	gcBefore := jstatGCs(t, v.Pid, perf)

	comms := threadComms(t, v.Pid)
	st, _ := appRoundTrip(t, v, byStasis, "--tcp-established")
	busy.end(t, busy.n.Load())
	if diff := dumpedThreadsDiff(comms, threadComms(t, v.Pid), testutil.ImageTree(t, st.dir), v.Pid); diff != "" {
		t.Errorf("the JVM's threads after the restore: %s", diff)
	}
	after := threadNames(t, v.Pid)
	for _, want := range []string{"VM Thread", "C2 CompilerThre", "C1 CompilerThre", "G1 Conc#0", "GC Thread#0", "Signal Dispatch", "stasis-worker-1", "pool-1-thread-3"} {
		if !slices.Contains(after, want) {
			t.Errorf("no JVM thread %q after the restore: %q", want, after)
		}
	}
	if m := mapsWith(t, v.Pid, "hsperfdata"); perf && !strings.Contains(m, " rw-s ") {
		t.Errorf("the restored JVM's hsperfdata mapping is %q, want a shared rw mapping of %s", m, perfFile)
	}
	res := get("/check", "ok ")
	t.Logf("after the restore, the JVM's own check: %s", strings.TrimSpace(res))
	testutil.WaitFor(t, 10*time.Second, "the restored JIT to compile StasisHTTP::cold", func() bool {
		return jitCold.MatchString(readFile(v.Log))
	})
	if perf {
		// jstat maps the file the JVM writes: the GC of /check shows.
		if after := jstatGCs(t, v.Pid, perf); after <= gcBefore {
			t.Errorf("jstat (the hsperfdata file) counts %d GCs after the restore's /check, %d before the dump: the restored JVM does not write to it", after, gcBefore)
		}
		out, err := exec.Command("jcmd", "-J-XX:-UsePerfData", strconv.Itoa(v.Pid), "Thread.print").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"stasis-worker-15"`) {
			t.Errorf("jcmd %d Thread.print after the restore (attach: SIGQUIT, then a unix socket): %v\n%.2000s", v.Pid, err, out)
		}
	} else {
		v.Signal(t, unix.SIGQUIT)
		testutil.WaitFor(t, 10*time.Second, "the restored JVM to print a thread dump on SIGQUIT", func() bool {
			l := readFile(v.Log)
			return strings.Contains(l, "Full thread dump") && strings.Contains(l, `"stasis-worker-15"`)
		})
	}

	get("/hello", "hello ")
	n := dialServer(t, port)
	if _, err := httpGet(n, bufio.NewReader(n), "/hello"); err != nil {
		t.Fatalf("a new connection after the restore: %v", err)
	}

	v.Signal(t, unix.SIGTERM)
	if code := v.Wait(t, 15*time.Second); code != 128+int(unix.SIGTERM) {
		t.Errorf("the JVM exited with %d after SIGTERM, want %d\n%s", code, 128+int(unix.SIGTERM), v.LogTail())
	}
	if h := readFile(hook); !strings.Contains(h, "heap=ok") {
		t.Errorf("the shutdown hook wrote %q, want heap=ok", h)
	}
	t.Logf("figures: %s; %s", st, cr)
}

// mapsWith is the first line of /proc/PID/maps that contains s, or "".
func mapsWith(t *testing.T, pid int, s string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// threadNames is the sorted comm of every thread of pid.
func threadNames(t *testing.T, pid int) []string {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/comm", pid, e.Name()))
		if err == nil {
			names = append(names, strings.TrimSpace(string(b)))
		}
	}
	slices.Sort(names)
	return names
}

// threadComms is the comm of every thread of pid, by tid.
func threadComms(t *testing.T, pid int) map[int]string {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	comms := map[int]string{}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/comm", pid, tid)); err == nil {
			comms[tid] = strings.TrimSpace(string(b))
		}
	}
	return comms
}

// dumpedThreadsDiff says which threads of pid that the images (their
// pstree entries) hold are not back under their tid with the comm they
// had before the dump (before, read shortly before it). The JVM starts
// and ends threads of its own (compiler threads come and go with the
// JIT's queue, GC workers start on demand): a thread that ended before
// the dump, or started after before was read, is not compared, and one
// the restored JVM started is not a difference.
func dumpedThreadsDiff(before, after map[int]string, tree []*pstree.PstreeEntry, pid int) string {
	var d []string
	for _, e := range tree {
		if int(e.GetPid()) != pid {
			continue
		}
		for _, tid := range e.GetThreads() {
			was, ok := before[int(tid)]
			if !ok {
				continue
			}
			switch is, back := after[int(tid)]; {
			case !back:
				d = append(d, fmt.Sprintf("thread %d (%q) is not back", tid, was))
			case is != was:
				d = append(d, fmt.Sprintf("thread %d was %q, is %q", tid, was, is))
			}
		}
	}
	return strings.Join(d, "; ")
}

// jstatGCs is the JVM's young and full GC count as jstat reads it from the
// hsperfdata file (0 without it).
func jstatGCs(t *testing.T, pid int, perf bool) int {
	t.Helper()
	if !perf {
		return 0
	}
	out, err := exec.Command("jstat", "-J-XX:-UsePerfData", "-gcutil", strconv.Itoa(pid)).CombinedOutput()
	if err != nil {
		t.Fatalf("jstat -gcutil %d: %v\n%s", pid, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	head, vals := strings.Fields(lines[0]), strings.Fields(lines[len(lines)-1])
	n := 0
	for i, h := range head {
		if (h == "YGC" || h == "FGC") && i < len(vals) {
			k, _ := strconv.Atoi(vals[i])
			n += k
		}
	}
	return n
}
