package e2e

import (
	"fmt"
	"image"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// guiScript starts, as one tree under this shell, an X server with a VNC
// server built in (Xtigervnc: display :$1, VNC on 127.0.0.1:$2, no TCP
// for X), then, once its socket is there, an xterm whose shell counts in
// the window and in its title, and an xclock updating every second. The
// counter waits on a FIFO ($3) nobody writes to, with a timeout, rather
// than in a sleep process: the tree has no short-lived tasks, and the
// restored one is the dumped one.
const guiScript = `#!/bin/sh
export DISPLAY=:$1
Xtigervnc :$1 -rfbport $2 -localhost -SecurityTypes None -geometry 640x400 -depth 24 -nolisten tcp -desktop stasis &
while [ ! -S /tmp/.X11-unix/X$1 ]; do sleep 0.05; done
mkfifo $3
xterm -fn fixed -geometry 50x8+10+10 -T count -e bash -c 'exec 9<>"$0"; i=0; while :; do i=$((i+1)); printf "\033]0;count %d\007count %d\n" $i $i; read -t 0.2 -u 9; done' $3 &
xclock -geometry 150x150+400+10 -update 1 &
wait
`

var xtermCount = regexp.MustCompile(`"count (\d+)": \("xterm"`)

// TestVNC: a desktop under VNC (Xtigervnc with an xterm running a counter
// and an xclock) is dumped as one tree with the X server, killed and
// restored: the server's listening sockets (the file
// /tmp/.X11-unix/XN, which the killed server leaves behind, and the
// abstract one) and its connections to both clients come back; the
// counter moves on in the xterm's title; a VNC client's screenshots before
// and after (saved as PNG, with xwd's after) show the windows, changed; new
// X and VNC clients connect; a second round trip by CRIU 4.2 gives the
// figures; SIGTERM ends the server cleanly (it removes its socket file).
//
// Not parallel: the xterm holds a pty, whose index the restore needs back.
func TestVNC(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"Xtigervnc", "xterm", "xclock", "xwd", "xdpyinfo", "xwininfo"} {
		testutil.RequireTool(t, tool)
	}
	work := t.TempDir()
	art := artefactDir(t)
	script := filepath.Join(work, "gui.sh")
	if err := os.WriteFile(script, []byte(guiScript), 0o755); err != nil {
		t.Fatal(err)
	}
	disp := freeDisplay(t)
	display := ":" + strconv.Itoa(disp)
	sock := fmt.Sprintf("/tmp/.X11-unix/X%d", disp)
	t.Cleanup(func() {
		os.Remove(sock)
		os.Remove(fmt.Sprintf("/tmp/.X%d-lock", disp))
	})
	port := freePort(t, "127.0.0.1")
	v := testutil.StartProgram(t, program(t, "sh"), script, strconv.Itoa(disp), strconv.Itoa(port), filepath.Join(work, "tick"))
	x := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "DISPLAY="+display)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v on %s: %v\n%s\n%s", name, args, display, err, out, v.LogTail())
		}
		return string(out)
	}
	count := func() int {
		t.Helper()
		tree := x("xwininfo", "-root", "-tree")
		m := xtermCount.FindStringSubmatch(tree)
		if m == nil || !strings.Contains(tree, `"xclock"`) {
			return -1
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	testutil.WaitFor(t, 20*time.Second, "the xterm and the xclock on "+display, func() bool {
		if _, err := os.Stat(sock); err != nil {
			return false
		}
		return count() > 3
	})
	waitListening(t, v, port)
	before := grabPNG(t, port, filepath.Join(art, "vnc-before.png"))

	at := count()
	st, _ := appRoundTrip(t, v, byStasis)
	n1 := count()
	testutil.WaitFor(t, 10*time.Second, "the xterm's counter to move on after the restore", func() bool { return count() > n1 })
	if n1 < at {
		t.Errorf("the counter is %d after the restore, %d at the dump", n1, at)
	}
	// The xclock ticks again once its poll, re-executed whole by the
	// restore (as by criu: a poll's remaining time is not kept), times out:
	// up to a second after the restore, plus its own catching up (and
	// seconds more on a loaded machine: the loop ends once both changed).
	term, clock := image.Rect(10, 10, 300, 110), image.Rect(400, 10, 550, 160)
	var after image.Image
	for deadline := time.Now().Add(30 * time.Second); ; {
		time.Sleep(500 * time.Millisecond)
		after = grabPNG(t, port, filepath.Join(art, "vnc-after.png"))
		if differs(before, after, term) && differs(before, after, clock) || time.Now().After(deadline) {
			break
		}
	}
	xwd, err := xwdImage([]byte(x("xwd", "-root", "-silent")))
	if err != nil {
		t.Fatal(err)
	}
	if err := writePNG(filepath.Join(art, "xwd-after.png"), xwd); err != nil {
		t.Fatal(err)
	}
	for _, r := range []image.Rectangle{term, clock} {
		if !differs(before, after, r) {
			t.Errorf("the screenshots before and after the restore are the same in %v: the window did not change", r)
		}
		if c := colours(after, r); c < 2 {
			t.Errorf("the VNC screenshot after the restore has %d colour(s) in %v: no window drawn", c, r)
		}
		if c := colours(xwd, r); c < 2 {
			t.Errorf("xwd's screenshot after the restore has %d colour(s) in %v: no window drawn", c, r)
		}
	}
	if !strings.Contains(x("xdpyinfo"), "name of display:    "+display) {
		t.Errorf("xdpyinfo after the restore does not name %s", display)
	}

	var cr ckptRun
	if haveCRIU(t) {
		cr, _ = appRoundTrip(t, v, byCRIU)
		n2 := count()
		testutil.WaitFor(t, 10*time.Second, "the counter to move on after the CRIU restore", func() bool { return count() > n2 })
	}

	// SIGTERM to the server: it closes down cleanly, and its clients and
	// the shell end with it.
	tree := testutil.MustTree(t, v.Pid)
	for _, task := range tree {
		if task.Comm == "Xtigervnc" {
			if err := unix.Kill(task.Pid, unix.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
	}
	v.Wait(t, 15*time.Second)
	testutil.WaitFor(t, 10*time.Second, "the X server to remove "+sock, func() bool {
		_, err := os.Stat(sock)
		return os.IsNotExist(err)
	})
	t.Logf("figures: %s; %s", st, cr)
}

// grabPNG takes a VNC screenshot as a new client and saves it as path.
func grabPNG(t *testing.T, port int, path string) image.Image {
	t.Helper()
	img, err := vncGrab(port)
	if err != nil {
		t.Fatal(err)
	}
	if err := writePNG(path, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// freeDisplay is an X display number with neither a socket nor a lock
// file in /tmp.
func freeDisplay(t *testing.T) int {
	t.Helper()
	for n := 40 + os.Getpid()%100; n < 400; n++ {
		_, e1 := os.Stat(fmt.Sprintf("/tmp/.X11-unix/X%d", n))
		_, e2 := os.Stat(fmt.Sprintf("/tmp/.X%d-lock", n))
		if os.IsNotExist(e1) && os.IsNotExist(e2) {
			return n
		}
	}
	t.Fatal("no free X display number in /tmp")
	return 0
}
