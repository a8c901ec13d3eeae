// Command migration measures iterative migration of a process that keeps
// writing its memory (issue 16): pre-copy rounds (stasis pre-dump, each
// with --prev-images-dir of the one before) until the pages saved stop
// shrinking, then the final dump --track-mem, whose freeze is the
// downtime; beside it a full dump of the same process, and the restore.
//
//	go run ./bench/migration [-mib 1024] [-rate 100] [-stasis PATH]
//
// -rate is the share of its pages the victim rewrites per second, in
// thousandths (100: 10%/s). The victim is test/victims/track.c, built with
// gcc into a temporary dir; bench is a child subreaper and kills what it
// started (the victim, its restored self) by pid.
package main

import (
	"flag"
	"fmt"
	"github.com/stasis-cr/stasis/bench/benchenv"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/stats"
	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/images"
)

func main() {
	mib := flag.Int("mib", 1024, "victim memory, MiB")
	rate := flag.Int("rate", 100, "pages rewritten per second, in thousandths of all")
	bin := flag.String("stasis", "", "stasis binary (default: built from this checkout)")
	rounds := flag.Int("rounds", 6, "most pre-copy rounds")
	flag.Parse()
	if err := run(*mib, *rate, *bin, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "migration:", err)
		os.Exit(1)
	}
}

func run(mib, rate int, bin string, rounds int) error {
	env, err := benchenv.Setup("stasis-migration-", bin, "track")
	if err != nil {
		return err
	}
	defer env.Close()
	tmp, bin, victim := env.Tmp, env.Bin, env.Victim
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
	fmt.Printf("victim: %d MiB, rewriting %.1f%% of its pages per second\n\n", mib, float64(rate)/10)
	stasis := func(args ...string) (time.Duration, error) {
		start := time.Now()
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("stasis %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return time.Since(start), nil
	}
	// A full dump first (-R), for the comparison.
	full := filepath.Join(tmp, "full")
	took, err := stasis("dump", "-t", strconv.Itoa(pid), "-D", full, "-R", "--shell-job")
	if err != nil {
		return err
	}
	fst, _ := readStats(full)
	fmt.Printf("%-22s %10s %10s %12s %10s\n", "step", "wall", "frozen", "pages saved", "MiB sent")
	line := func(name string, wall time.Duration, st *stats.DumpStatsEntry, dir string) {
		fmt.Printf("%-22s %10v %10v %12d %10.1f\n", name, wall.Round(time.Millisecond),
			(time.Duration(st.GetFrozenTime()) * time.Microsecond).Round(time.Microsecond), st.GetPagesWritten(), float64(pagesBytes(dir))/(1<<20))
	}
	line("full dump -R", took, fst, full)
	os.RemoveAll(full)
	var total int64
	start := time.Now()
	prev := ""
	last := uint64(1 << 62)
	for n := 1; n <= rounds; n++ {
		dir := filepath.Join(tmp, strconv.Itoa(n))
		args := []string{"pre-dump", "-t", strconv.Itoa(pid), "-D", dir}
		if prev != "" {
			args = append(args, "--prev-images-dir", "../"+filepath.Base(prev))
		}
		took, err := stasis(args...)
		if err != nil {
			return err
		}
		st, _ := readStats(dir)
		line(fmt.Sprintf("pre-copy round %d", n), took, st, dir)
		total += pagesBytes(dir)
		prev = dir
		if st.GetPagesWritten() >= last*9/10 {
			break // the dirty set stopped shrinking
		}
		last = st.GetPagesWritten()
	}
	final := filepath.Join(tmp, "final")
	took, err = stasis("dump", "-t", strconv.Itoa(pid), "-D", final, "--prev-images-dir", "../"+filepath.Base(prev), "--track-mem", "--shell-job")
	if err != nil {
		return err
	}
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, 0, nil)
	st, _ := readStats(final)
	line("final dump --track-mem", took, st, final)
	total += pagesBytes(final)
	migr := time.Since(start)
	rtook, err := stasis("restore", "-D", final, "-d", "--shell-job")
	if err != nil {
		return err
	}
	fmt.Printf("\nrestore (chain of %s): %v\n", filepath.Base(prev), rtook.Round(time.Millisecond))
	fmt.Printf("downtime (final dump frozen): %v; full dump frozen: %v\n",
		time.Duration(st.GetFrozenTime())*time.Microsecond, time.Duration(fst.GetFrozenTime())*time.Microsecond)
	fmt.Printf("total: %v, %.1f MiB written for a %d MiB process\n", migr.Round(time.Millisecond), float64(total)/(1<<20), mib)
	// The restored victim checks itself.
	_ = unix.Kill(pid, unix.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
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

func pagesBytes(dir string) int64 {
	var n int64
	names, _ := filepath.Glob(filepath.Join(dir, "pages-*.img"))
	for _, p := range names {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}
