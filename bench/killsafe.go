package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The killsafe group (issue 10): `stasis dump -R` of a victim of -size
// bytes is killed with SIGKILL at random moments; after each kill the
// victim must run on intact. The same for CRIU side by side.

// killTool is one checkpoint tool under test.
type killTool struct {
	name string
	bin  string
	args func(pid int, dir string) []string
}

// killTrial is one kill of one dump.
type killTrial struct {
	at       time.Duration // when the kill was sent, after the tool's start
	finished bool          // the dump had already exited
	verdict  string        // "" for an intact victim, else what was wrong
	maps     bool          // its mappings differ from before the dump
}

type killResult struct {
	tool    string
	ref     time.Duration // fastest of the unkilled reference dumps
	trials  []killTrial
	starts  int // victims started (1 + one per victim lost)
	skipped string
}

// criuDefault is CRIU 4.2 where the project's machines keep it.
const criuDefault = "/work/shared/tools/criu-4.2/criu"

func (b *bencher) killSafe(c config) ([]killResult, error) {
	tools := []killTool{{name: "stasis", bin: b.stasis, args: func(pid int, dir string) []string {
		return []string{"dump", "-t", strconv.Itoa(pid), "-D", dir, "-R", "-o", "dump.log"}
	}}}
	var out []killResult
	criu := c.criu
	if criu == "" {
		criu = criuDefault
	}
	if criu == "off" {
		out = append(out, killResult{tool: "criu", skipped: "-criu off"})
	} else if _, err := os.Stat(criu); err != nil {
		out = append(out, killResult{tool: "criu", skipped: fmt.Sprintf("%s: %v (-criu PATH)", criu, err)})
	} else {
		tools = append(tools, killTool{name: "criu", bin: criu, args: func(pid int, dir string) []string {
			return []string{"dump", "-t", strconv.Itoa(pid), "-D", dir, "-R", "--shell-job", "-o", "dump.log", "-v2"}
		}})
	}
	var res []killResult
	for _, tl := range tools {
		r, err := b.killTool(tl, c.size, c.killPoints)
		if err != nil {
			return nil, fmt.Errorf("killsafe %s: %w", tl.name, err)
		}
		res = append(res, r)
	}
	return append(res, out...), nil
}

// killVictim is a victim with what it looked like before the dumps.
type killVictim struct {
	*victim
	sigBlk uint64 // its own mask
	sigCgt string
	maps   string
}

func (b *bencher) startKillVictim(size int64, n int) (*killVictim, error) {
	v, err := startVictim(b.victim, filepath.Join(b.tmp, fmt.Sprintf("killsafe-victim-%d", n)), size)
	if err != nil {
		return nil, err
	}
	// victim.c blocks SIGUSR1 and SIGUSR2 and nothing else; /proc shows
	// them unblocked while it waits for them in sigtimedwait.
	kv := &killVictim{victim: v, sigBlk: 1<<(unix.SIGUSR1-1) | 1<<(unix.SIGUSR2-1)}
	kv.sigCgt, kv.maps = procStatus(v.pid)["SigCgt"], mapsOf(v.pid)
	return kv, nil
}

func (b *bencher) killTool(tl killTool, size int64, points int) (killResult, error) {
	r := killResult{tool: tl.name}
	dir := filepath.Join(b.imgRoot, "killsafe-"+tl.name)
	v, err := b.startKillVictim(size, r.starts)
	if err != nil {
		return r, err
	}
	r.starts++
	defer func() { v.close() }()
	// Reference: whole dumps, not killed; the kills are spread over the
	// fastest, so that few land after the end of a dump.
	var refs []time.Duration
	for i := 0; i < 3; i++ {
		d, err := runTool(tl, v.pid, dir, 0)
		if err != nil {
			return r, fmt.Errorf("reference dump: %w", err)
		}
		if why := v.check(); why != "" {
			return r, fmt.Errorf("victim not intact after a complete dump: %s", why)
		}
		refs = append(refs, d.took)
	}
	r.ref, _ = minMedian(refs)
	progress("killsafe %s: reference dump %v; %d kills", tl.name, r.ref.Round(time.Millisecond), points)
	// A kill that comes after the dump ended proves nothing: draw again,
	// up to 3 times as many tries in all.
	for i, during := 0, 0; during < points && i < 3*points; i++ {
		at := time.Duration(rand.Int64N(int64(r.ref)))
		d, err := runTool(tl, v.pid, dir, at)
		if err != nil {
			return r, err
		}
		tr := killTrial{at: at, finished: d.finished}
		if !d.finished {
			during++
		}
		tr.verdict = v.check()
		tr.maps = mapsOf(v.pid) != v.maps
		r.trials = append(r.trials, tr)
		state := "intact"
		if tr.verdict != "" {
			state = "LOST: " + tr.verdict
		}
		progress("killsafe %s %d (%d during the dump, of %d): kill at %v%s: %s", tl.name, i+1, during, points, at.Round(time.Microsecond),
			map[bool]string{true: " (dump had finished)"}[d.finished], state)
		if tr.verdict != "" || tr.maps {
			v.close()
			if v, err = b.startKillVictim(size, r.starts); err != nil {
				return r, err
			}
			r.starts++
		}
	}
	return r, nil
}

type toolRun struct {
	took     time.Duration
	finished bool
}

// runTool runs one dump into a fresh dir; with kill > 0 it sends SIGKILL
// to the tool that long after its start (if it still runs).
func runTool(tl killTool, pid int, dir string, kill time.Duration) (toolRun, error) {
	if err := os.RemoveAll(dir); err != nil {
		return toolRun{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return toolRun{}, err
	}
	cmd := exec.Command(tl.bin, tl.args(pid, dir)...)
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return toolRun{}, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var r toolRun
	if kill == 0 {
		err := <-done
		r.took, r.finished = time.Since(start), true
		if err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "dump.log"))
			return r, fmt.Errorf("%s dump: %v\n%s", tl.name, err, lastLines(string(log), 10))
		}
		return r, nil
	}
	select {
	case <-done:
		r.finished = true
	case <-time.After(time.Until(start.Add(kill))):
		_ = unix.Kill(cmd.Process.Pid, unix.SIGKILL)
		<-done
	}
	r.took = time.Since(start)
	reapOrphans()
	return r, nil
}

// reapOrphans kills and reaps helpers a killed tool left behind: bench is
// a child subreaper, so they are its children now; victims are tracked
// and left alone.
func reapOrphans() {
	for _, pid := range childrenOf(os.Getpid()) {
		if !tracked(pid) {
			_ = unix.Kill(pid, unix.SIGKILL)
			reap(pid)
		}
	}
}

func childrenOf(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := ppidOf(pid); err == nil && p == ppid {
			out = append(out, pid)
		}
	}
	return out
}

// check says what is wrong with the victim after a dump ("" if nothing):
// it must be alive, untraced, not stopped, with the signal mask and
// handlers it had, answer SIGUSR1 and find its whole memory pattern.
func (v *killVictim) check() string {
	deadline := time.Now().Add(2 * time.Second)
	var last string
	for {
		if !alive(v.pid) {
			var ws unix.WaitStatus
			if _, err := unix.Wait4(v.pid, &ws, unix.WNOHANG, nil); err == nil && ws.Signaled() {
				track(v.pid, false)
				return "died of " + ws.Signal().String()
			}
			return "died"
		}
		st := procStatus(v.pid)
		state := st["State"]
		switch {
		case st["TracerPid"] != "0":
			last = "still traced by " + st["TracerPid"]
		case strings.HasPrefix(state, "T") || strings.HasPrefix(state, "t"):
			last = "stopped (" + state + ")"
		default:
			last = ""
		}
		if last == "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if last != "" {
		return last
	}
	st := procStatus(v.pid)
	if m, _ := strconv.ParseUint(st["SigBlk"], 16, 64); m&^v.sigBlk != 0 {
		return fmt.Sprintf("signal mask %s, was at most %016x", st["SigBlk"], v.sigBlk)
	}
	if st["SigCgt"] != v.sigCgt {
		return fmt.Sprintf("handled signals %s, were %s", st["SigCgt"], v.sigCgt)
	}
	if err := v.ask(unix.SIGUSR1, "ack", 5*time.Second); err != nil {
		return "no answer to SIGUSR1"
	}
	if err := v.verify(); err != nil {
		return err.Error()
	}
	return ""
}

func procStatus(pid int) map[string]string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, val, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(val)
		}
	}
	return m
}

func mapsOf(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	return string(b)
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func printKillSafe(rs []killResult, size int64) {
	fmt.Printf("\nkillsafe: dump -R of a %s victim killed with SIGKILL at random moments (uniform over the fastest of 3 whole dumps)\n", fmtSize(size))
	fmt.Printf("intact = alive, not traced, not stopped, same signal mask and handlers, answers SIGUSR1, whole memory pattern right\n")
	fmt.Printf("kills: during the dump; after: kills that came after the dump had ended (drawn again, victims checked too)\n")
	fmt.Printf("%-8s %-10s %-8s %-14s %-8s %-14s %-14s %s\n", "tool", "ref dump", "kills", "intact", "after", "intact after", "maps changed", "lost victims: why")
	for _, r := range rs {
		if r.skipped != "" {
			fmt.Printf("%-8s SKIPPED: %s\n", r.tool, r.skipped)
			continue
		}
		intact, during, fin, finIntact, maps := 0, 0, 0, 0, 0
		why := map[string]int{}
		for _, t := range r.trials {
			switch {
			case t.finished:
				fin++
				if t.verdict == "" {
					finIntact++
				}
			case t.verdict == "":
				during++
				intact++
			default:
				during++
			}
			if t.verdict != "" {
				why[t.verdict]++
			}
			if t.maps && t.verdict == "" {
				maps++
			}
		}
		var ws []string
		for k, n := range why {
			ws = append(ws, fmt.Sprintf("%d x %s", n, k))
		}
		sort.Strings(ws)
		fmt.Printf("%-8s %-10s %-8d %-14s %-8d %-14s %-14d %s\n", r.tool, fmtDur(r.ref), during,
			fmt.Sprintf("%d/%d", intact, during), fin, fmt.Sprintf("%d/%d", finIntact, fin), maps, strings.Join(ws, "; "))
	}
}
