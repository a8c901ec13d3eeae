// Command migration measures `stasis migrate` of a process that keeps
// writing its memory (issue 16): pre-copy rounds while it runs, the final
// dump, the transfer and the restore in another network namespace (the
// "target host"); it prints what migrate prints (each round, the downtime
// and its parts), a full dump of the same process beside it, and checks
// the restored process.
//
//	go run ./bench/migration [-mib 1024] [-rate 100] [-stasis PATH] [-lazy] [-- MIGRATE FLAGS]
//
// -rate is the share of its pages the victim rewrites per second, in
// thousandths (100: 10%/s). -lazy is migrate --lazy-pages (the target
// runs the process before its memory is in). The victim is
// test/victims/track.c, built with gcc into a temporary dir; bench is a
// child subreaper and kills what it started (the victim, its restored
// self) by pid.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/bench/benchenv"
	"github.com/stasis-cr/stasis/internal/images"
)

func main() {
	mib := flag.Int("mib", 1024, "victim memory, MiB")
	rate := flag.Int("rate", 100, "pages rewritten per second, in thousandths of all")
	bin := flag.String("stasis", "", "stasis binary (default: built from this checkout)")
	full := flag.Bool("full", true, "also time a full dump -R of the victim, for comparison")
	lazy := flag.Bool("lazy", false, "migrate --lazy-pages: the target restores at once, the memory follows")
	keep := flag.Bool("keep", false, "keep the temporary dir (images, logs)")
	flag.Parse()
	if err := run(*mib, *rate, *bin, *full, *lazy, *keep, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "migration:", err)
		os.Exit(1)
	}
}

func run(mib, rate int, bin string, full, lazy, keep bool, extra []string) error {
	env, err := benchenv.Setup("stasis-migration-", bin, "track")
	if err != nil {
		return err
	}
	if keep {
		fmt.Println("kept:", env.Tmp)
	} else {
		defer env.Close()
	}
	tmp, bin, victim := env.Tmp, env.Bin, env.Victim
	ns, err := newNetns()
	if err != nil {
		return err
	}
	defer ns.Close()
	ready := filepath.Join(tmp, "ready")
	v := exec.Command(victim, ready, strconv.Itoa(mib), strconv.Itoa(rate))
	v.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := v.Start(); err != nil {
		return err
	}
	pid := v.Process.Pid
	defer func() { _ = unix.Kill(pid, unix.SIGKILL); var ws unix.WaitStatus; unix.Wait4(pid, &ws, 0, nil) }()
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Let it write for a while: the first round then meets a steady rate.
	time.Sleep(time.Second)
	fmt.Printf("victim: %d MiB, rewriting %.1f%% of its pages per second; load %s\n\n", mib, float64(rate)/10, loadavg())
	stasis := func(args ...string) (string, time.Duration, error) {
		start := time.Now()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			return "", 0, fmt.Errorf("stasis %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), time.Since(start), nil
	}
	if full {
		dir := filepath.Join(tmp, "full")
		_, took, err := stasis("dump", "-t", strconv.Itoa(pid), "-D", dir, "-R", "--shell-job")
		if err != nil {
			return err
		}
		st, _ := readStats(dir)
		fmt.Printf("full dump -R: %v, frozen %v, %d pages\n\n", took.Round(time.Millisecond),
			(time.Duration(st.GetFrozenTime()) * time.Microsecond).Round(time.Millisecond), st.GetPagesWritten())
		os.RemoveAll(dir)
	}
	src, dst := filepath.Join(tmp, "src"), filepath.Join(tmp, "dst")
	args := []string{"migrate", "-t", strconv.Itoa(pid), "--to", fmt.Sprintf("netns:/proc/%d/fd/%d", os.Getpid(), ns.Fd()),
		"-D", src, "--target-dir", dst, "--shell-job", "-v4", "-o", "migrate.log"}
	if keep {
		args = append(args, "--target-log", "migrate-receive.log")
	}
	if lazy {
		args = append(args, "--lazy-pages")
	}
	// The final dump kills the victim: reap it at once, or its pid is
	// taken when the target restores it.
	reaped := make(chan struct{})
	go func() { _ = v.Wait(); close(reaped) }()
	out, took, err := stasis(append(args, extra...)...)
	if err != nil {
		return err
	}
	<-reaped
	fmt.Print(out)
	fmt.Printf("migrate took %v; images: %.1f MiB on the source, %.1f MiB on the target; load %s\n",
		took.Round(time.Millisecond), float64(dirBytes(src))/(1<<20), float64(dirBytes(dst))/(1<<20), loadavg())
	// The dump killed the victim; the restored one is ours again (we are
	// a subreaper): it checks itself on SIGTERM.
	var ws unix.WaitStatus
	_ = unix.Kill(pid, unix.SIGTERM)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if wp, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wp == pid {
			if ws.ExitStatus() != 0 {
				return fmt.Errorf("the restored victim's self-check failed (status %d)", ws.ExitStatus())
			}
			fmt.Println("restored victim: every page checked")
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("the restored victim did not end its self-check")
}

// newNetns makes a network namespace, the target "host", and returns an
// fd of it; this process stays in its own.
func newNetns() (*os.File, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("new network namespace: %w", err)
	}
	ns, err := os.Open("/proc/thread-self/ns/net")
	if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
		// This thread is lost to the new namespace: end with it.
		panic(fmt.Sprintf("back to the own network namespace: %v", serr))
	}
	return ns, err
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func readStats(dir string) (*stats.DumpStatsEntry, error) {
	d, err := images.Open(dir)
	if err != nil {
		return &stats.DumpStatsEntry{}, err
	}
	e := &stats.StatsEntry{}
	if err := d.ReadOne("stats-dump", e); err != nil {
		return &stats.DumpStatsEntry{}, err
	}
	return e.GetDump(), nil
}

func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
