// Command lazy measures post-copy (issue 16): the time from the start of
// a restore until the restored process answers, for a full restore and
// for a lazy one (dump --lazy-pages, the tree frozen and serving its
// pages; lazy-pages --page-server; restore --lazy-pages), and until it
// has read back every page.
//
//	go run ./bench/lazy [-mib 512] [-runs 3] [-stasis PATH]
//
// The victim is test/victims/lazy.c: MIB MiB of patterned memory; it
// answers as soon as it wakes in another pid namespace (each copy is
// restored with --pidns: a lazy dump keeps the source frozen under its
// pid), with how many of its pages were resident then and the wall
// clock, then reads every page ("verified"). bench is a child subreaper
// and kills what it started by pid.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"github.com/stasis-cr/stasis/bench/benchenv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	mib := flag.Int("mib", 512, "victim memory, MiB")
	runs := flag.Int("runs", 3, "runs of each kind")
	bin := flag.String("stasis", "", "stasis binary (default: built from this checkout)")
	flag.Parse()
	if err := run(*mib, *runs, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "lazy:", err)
		os.Exit(1)
	}
}

type sample struct {
	answer, verified, allIn time.Duration
	resident, pages         int
}

func run(mib, runs int, bin string) error {
	env, err := benchenv.Setup("stasis-lazy-", bin, "lazy")
	if err != nil {
		return err
	}
	defer env.Close()
	tmp, bin, victim := env.Tmp, env.Bin, env.Victim
	b := &bench{bin: bin, victim: victim, tmp: tmp, mib: mib}
	var full, lazy []sample
	for i := 0; i < runs; i++ {
		s, err := b.once(i, false)
		if err != nil {
			return fmt.Errorf("full restore, run %d: %w", i+1, err)
		}
		full = append(full, s)
		fmt.Fprintf(os.Stderr, "full run %d: answer %v, verified %v\n", i+1, s.answer, s.verified)
		if s, err = b.once(i, true); err != nil {
			return fmt.Errorf("lazy restore, run %d: %w", i+1, err)
		}
		lazy = append(lazy, s)
		fmt.Fprintf(os.Stderr, "lazy run %d: answer %v (%d of %d pages resident), verified %v, every page in %v\n", i+1, s.answer, s.resident, s.pages, s.verified, s.allIn)
	}
	fmt.Printf("%d MiB victim, restore into a new pid namespace, median (min-max) of %d runs\n\n", mib, runs)
	fmt.Printf("| restore | to first answer | pages resident then | to every page read | every page in |\n|---|---|---|---|---|\n")
	row := func(name string, ss []sample, lazy bool) {
		res, all := "all", "-"
		if lazy {
			res = fmt.Sprintf("%d of %d", median(ss, func(s sample) time.Duration { return time.Duration(s.resident) }), ss[0].pages)
			all = cell(ss, func(s sample) time.Duration { return s.allIn })
		}
		fmt.Printf("| %s | %s | %s | %s | %s |\n", name, cell(ss, func(s sample) time.Duration { return s.answer }), res,
			cell(ss, func(s sample) time.Duration { return s.verified }), all)
	}
	row("full (restore)", full, false)
	row("lazy (dump --lazy-pages, lazy-pages --page-server, restore --lazy-pages)", lazy, true)
	return nil
}

func median(ss []sample, f func(sample) time.Duration) time.Duration {
	v := make([]time.Duration, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	return v[len(v)/2]
}

func cell(ss []sample, f func(sample) time.Duration) string {
	v := make([]time.Duration, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("%s (%s-%s)", r(v[len(v)/2]), r(v[0]), r(v[len(v)-1]))
}

type bench struct {
	bin, victim, tmp string
	mib              int
}

var answerRE = regexp.MustCompile(`answer: (\d+) of (\d+) pages resident at (\d+)\.(\d+)`)

// once dumps a fresh victim and restores it, fully or lazily, and times
// the copy's answer and check.
func (b *bench) once(n int, lazy bool) (sample, error) {
	var s sample
	dir := filepath.Join(b.tmp, fmt.Sprintf("run%d-%v", n, lazy))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return s, err
	}
	defer os.RemoveAll(dir)
	ready, vlog := filepath.Join(dir, "ready"), filepath.Join(dir, "victim.log")
	lf, err := os.OpenFile(vlog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return s, err
	}
	v := exec.Command(b.victim, ready, strconv.Itoa(b.mib))
	v.Stdout, v.Stderr = lf, lf
	v.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = v.Start()
	lf.Close()
	if err != nil {
		return s, err
	}
	pid := v.Process.Pid
	defer kill(pid)
	if err := waitFor(60*time.Second, func() bool { _, err := os.Stat(ready); return err == nil }); err != nil {
		return s, fmt.Errorf("victim not ready: %w", err)
	}
	imgs := filepath.Join(dir, "images")
	var dump, daemon *exec.Cmd
	var dumpErr bytes.Buffer
	if lazy {
		port, err := freePort()
		if err != nil {
			return s, err
		}
		dlog := filepath.Join(dir, "dump.log")
		dump = exec.Command(b.bin, "dump", "-t", strconv.Itoa(pid), "-D", imgs, "--lazy-pages", "--address", "127.0.0.1", "--port", strconv.Itoa(port), "-v4", "-o", dlog)
		dump.Stderr = &dumpErr
		if err := dump.Start(); err != nil {
			return s, err
		}
		defer kill(dump.Process.Pid)
		if err := waitFor(120*time.Second, func() bool {
			bb, _ := os.ReadFile(dlog)
			return bytes.Contains(bb, []byte("lazy dump: serving"))
		}); err != nil {
			return s, fmt.Errorf("lazy dump: %w: %s", err, dumpErr.String())
		}
		daemon = exec.Command(b.bin, "lazy-pages", "-D", imgs, "--page-server", "--address", "127.0.0.1", "--port", strconv.Itoa(port), "-v4", "-o", filepath.Join(dir, "lazy-pages.log"))
		if err := daemon.Start(); err != nil {
			return s, err
		}
		defer kill(daemon.Process.Pid)
		if err := waitFor(30*time.Second, func() bool { _, err := os.Stat(filepath.Join(imgs, "lazy-pages.socket")); return err == nil }); err != nil {
			return s, fmt.Errorf("lazy-pages did not listen: %w", err)
		}
	} else {
		if out, err := exec.Command(b.bin, "dump", "-t", strconv.Itoa(pid), "-D", imgs).CombinedOutput(); err != nil {
			return s, fmt.Errorf("dump: %v: %s", err, out)
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil)
	}
	pidfile := filepath.Join(dir, "restored.pid")
	args := []string{"restore", "-D", imgs, "--pidns", "--pidfile", pidfile}
	if lazy {
		args = append(args, "--lazy-pages")
	}
	start := time.Now()
	r := exec.Command(b.bin, args...)
	var rerr bytes.Buffer
	r.Stderr = &rerr
	if err := r.Start(); err != nil {
		return s, err
	}
	defer kill(r.Process.Pid)
	var daemonDone time.Time
	daemonExit := make(chan error, 1)
	if daemon != nil {
		go func() { err := daemon.Wait(); daemonDone = time.Now(); daemonExit <- err }()
	}
	var m []string
	if err := waitFor(120*time.Second, func() bool {
		bb, _ := os.ReadFile(vlog)
		m = answerRE.FindStringSubmatch(string(bb))
		return m != nil
	}); err != nil {
		return s, fmt.Errorf("no answer from the copy: %w: %s", err, rerr.String())
	}
	sec, _ := strconv.ParseInt(m[3], 10, 64)
	nsec, _ := strconv.ParseInt(m[4], 10, 64)
	s.answer = time.Unix(sec, nsec).Sub(start)
	s.resident, _ = strconv.Atoi(m[1])
	s.pages, _ = strconv.Atoi(m[2])
	if err := waitFor(120*time.Second, func() bool {
		bb, _ := os.ReadFile(vlog)
		return bytes.Contains(bb, []byte("verified")) || bytes.Contains(bb, []byte("FAIL"))
	}); err != nil {
		return s, fmt.Errorf("the copy did not read its memory back: %w", err)
	}
	s.verified = time.Since(start)
	if bb, _ := os.ReadFile(vlog); bytes.Contains(bb, []byte("FAIL")) {
		return s, fmt.Errorf("the copy's memory differs:\n%s", bb)
	}
	if daemon != nil {
		select {
		case err := <-daemonExit:
			if err != nil {
				return s, fmt.Errorf("lazy-pages: %w", err)
			}
		case <-time.After(120 * time.Second):
			return s, fmt.Errorf("lazy-pages still running")
		}
		s.allIn = daemonDone.Sub(start)
		if err := dump.Wait(); err != nil {
			return s, fmt.Errorf("dump --lazy-pages: %w: %s", err, dumpErr.String())
		}
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil)
	}
	if bb, err := os.ReadFile(pidfile); err == nil {
		if hp, err := strconv.Atoi(strings.TrimSpace(string(bb))); err == nil {
			_ = unix.Kill(hp, unix.SIGKILL)
		}
	}
	_ = r.Wait()
	return s, nil
}

func kill(pid int) {
	_ = unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
}

func waitFor(d time.Duration, ok func() bool) error {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		if ok() {
			return nil
		}
	}
	return fmt.Errorf("timed out after %v", d)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
