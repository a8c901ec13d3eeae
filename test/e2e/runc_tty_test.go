package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// consoleSocket is the receiving end of runc's --console-socket: runc
// sends the pty master of a terminal container over it (SCM_RIGHTS), at
// run and again at restore (the master criu sends runc in the
// orphan-pts-master notification).
type consoleSocket struct {
	path    string
	masters chan *os.File
}

func newConsoleSocket(t *testing.T) *consoleSocket {
	t.Helper()
	c := &consoleSocket{path: filepath.Join(t.TempDir(), "console.sock"), masters: make(chan *os.File, 4)}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: c.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.AcceptUnix()
			if err != nil {
				return
			}
			buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
			n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			conn.Close()
			if err != nil {
				continue
			}
			scms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil || len(scms) == 0 {
				continue
			}
			fds, err := unix.ParseUnixRights(&scms[0])
			if err != nil || len(fds) == 0 {
				continue
			}
			c.masters <- os.NewFile(uintptr(fds[0]), string(buf[:n]))
		}
	}()
	return c
}

// next is the next master runc sent.
func (c *consoleSocket) next(t *testing.T) *ptyConsole {
	t.Helper()
	select {
	case m := <-c.masters:
		p := &ptyConsole{master: m}
		go p.read()
		t.Cleanup(func() { m.Close() })
		return p
	case <-time.After(20 * time.Second):
		t.Fatal("runc sent no console master on --console-socket")
	}
	return nil
}

// ptyConsole is a container's terminal, seen from its master.
type ptyConsole struct {
	master *os.File
	mu     sync.Mutex
	out    strings.Builder
}

func (p *ptyConsole) read() {
	b := make([]byte, 4096)
	for {
		n, err := p.master.Read(b)
		p.mu.Lock()
		p.out.Write(b[:n])
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (p *ptyConsole) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// say types line on the terminal and waits for the container's answer.
func (p *ptyConsole) say(t *testing.T, line, want string) {
	t.Helper()
	if _, err := p.master.WriteString(line + "\n"); err != nil {
		t.Fatalf("write %q on the console: %v", line, err)
	}
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%q on the console", want), func() bool { return strings.Contains(p.output(), want) })
}

// runcTerminalCycle: a container made with terminal:true and
// --console-socket (runc run -d) counts the lines typed on its terminal;
// checkpoint, restore with a new --console-socket: the master runc sends
// then is a new one (orphan-pts-master), and the container, which kept
// its count, reads and writes through it.
func runcTerminalCycle(t *testing.T, criu string) {
	e := newRuncEnv(t, criu)
	cfgPath := filepath.Join(e.bundle, "config.json")
	var cfg map[string]any
	b, _ := os.ReadFile(cfgPath)
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	proc := cfg["process"].(map[string]any)
	proc["terminal"] = true
	proc["args"] = []string{"sh", "-c", `i=0; while read l; do i=$((i+1)); echo "line $i: $l [$(tty)]"; done`}
	b, _ = json.MarshalIndent(cfg, "", " ")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("stasis-tty-%d", os.Getpid())
	t.Cleanup(func() { e.close(id) })
	cs := newConsoleSocket(t)
	e.must("run", "-d", "--console-socket", cs.path, id)
	con := cs.next(t)
	con.say(t, "one", "line 1: one [/dev/pts/0]")

	img := t.TempDir()
	e.must("checkpoint", "--image-path", img, id)
	if st := e.status(id); st == "running" {
		t.Fatal("after checkpoint the container is still running")
	}
	con.master.Close() // the old terminal goes, as with its runtime

	cs2 := newConsoleSocket(t)
	e.must("restore", "-d", "--console-socket", cs2.path, "--image-path", img, id)
	if st := e.status(id); st != "running" {
		t.Fatalf("after restore the container is %q", st)
	}
	con2 := cs2.next(t)
	con2.say(t, "two", "line 2: two [/dev/pts/0]")
	t.Logf("console after restore: %q", con2.output())
}

// TestRuncTerminal: runc's terminal containers with stasis as criu, then
// with CRIU 4.2 as the reference. Alone, as TestRunc (cgroups).
func TestRuncTerminal(t *testing.T) {
	testutil.RequireRoot(t)
	ref := testutil.CRIU(t)
	t.Run("stasis", func(t *testing.T) { runcTerminalCycle(t, "") })
	t.Run("criu", func(t *testing.T) { runcTerminalCycle(t, ref) })
}
