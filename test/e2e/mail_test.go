package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
	"golang.org/x/sys/unix"
)

// postfixMasterCF is the services of the test's postfix: Debian's
// master.cf without chroot (the queue is the test's dir, not
// /var/spool/postfix), without TLS, and with smtpd on the test's port.
const postfixMasterCF = `127.0.0.1:%d inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// postfixMainCF: everything in the test's dir, mail for @stasis.test
// delivered by virtual(8) into one mbox file, owned by nobody; nothing
// delivered while defer_transports names virtual. The log goes to the
// master's stdout (master -s), the victim's log: a master started without
// `postfix start` refuses a maillog_file, and there is no syslog.
const postfixMainCF = `compatibility_level = 3.6
queue_directory = %[1]s/queue
data_directory = %[1]s/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.stasis.test
mydomain = stasis.test
myorigin = stasis.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
local_transport = error:no local delivery
virtual_mailbox_domains = stasis.test
virtual_mailbox_base = %[1]s/mail
virtual_mailbox_maps = static:box
virtual_uid_maps = static:%[2]d
virtual_gid_maps = static:%[3]d
maillog_file = /dev/stdout
smtputf8_enable = no
biff = no
smtpd_banner = $myhostname ESMTP
defer_transports = virtual
`

// setupPostfix writes a postfix instance's config dir and queue under
// work and returns the config dir. The queue's dirs are made as Debian's
// postfix-files says (owner postfix; maildrop and public group postdrop)
// by the test itself: postfix's own set-permissions would also touch the
// host's /etc/postfix.
func setupPostfix(t *testing.T, work string, port int) string {
	t.Helper()
	pf, err := user.Lookup("postfix")
	if err != nil {
		testutil.SkipOrFail(t, "no postfix user (Debian package postfix): %v", err)
	}
	drop, err := user.LookupGroup("postdrop")
	if err != nil {
		testutil.SkipOrFail(t, "no postdrop group (Debian package postfix): %v", err)
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pf.Uid)
	gid, _ := strconv.Atoi(drop.Gid)
	nuid, _ := strconv.Atoi(nobody.Uid)
	ngid, _ := strconv.Atoi(nobody.Gid)
	// postfix's daemons run as postfix, the delivery as nobody: they must
	// get through the test's temp dirs.
	for d := work; d != "/tmp" && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(work, "etc")
	dirs := []struct {
		path     string
		uid, gid int
		mode     os.FileMode
	}{
		{conf, 0, 0, 0o755}, {"queue", 0, 0, 0o755}, {"queue/pid", 0, 0, 0o755},
		{"data", uid, 0, 0o700}, {"mail", nuid, ngid, 0o700},
		{"queue/maildrop", uid, gid, 0o730 | os.ModeSticky}, {"queue/public", uid, gid, 0o710 | os.ModeSetgid},
	}
	for _, q := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		dirs = append(dirs, struct {
			path     string
			uid, gid int
			mode     os.FileMode
		}{"queue/" + q, uid, 0, 0o700})
	}
	for _, d := range dirs {
		p := d.path
		if !filepath.IsAbs(p) {
			p = filepath.Join(work, p)
		}
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, d.uid, d.gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	writeConfig(t, conf, "main.cf", fmt.Sprintf(postfixMainCF, work, nuid, ngid))
	writeConfig(t, conf, "master.cf", fmt.Sprintf(postfixMasterCF, port))
	return conf
}

// smtp is a client's SMTP session over one connection kept across the
// checkpoint.
type smtp struct {
	c  net.Conn
	br *bufio.Reader
}

// reply reads one (multi-line) reply and fails unless its code is want.
func (s *smtp) reply(t *testing.T, want int) string {
	t.Helper()
	s.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var all []string
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			t.Fatalf("smtp: read a reply (want %d) after %q: %v", want, all, err)
		}
		all = append(all, strings.TrimRight(line, "\r\n"))
		if len(line) < 4 || line[3] != '-' {
			break
		}
	}
	last := all[len(all)-1]
	if code, _ := strconv.Atoi(last[:min(3, len(last))]); code != want {
		t.Fatalf("smtp: reply %q, want %d", all, want)
	}
	return strings.Join(all, "\n")
}

func (s *smtp) send(t *testing.T, line string) {
	t.Helper()
	s.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(s.c, "%s\r\n", line); err != nil {
		t.Fatalf("smtp: send %q: %v", line, err)
	}
}

func (s *smtp) cmd(t *testing.T, line string, want int) string {
	t.Helper()
	s.send(t, line)
	return s.reply(t, want)
}

// TestMailPostfix: postfix (master and its daemons: smtpd, cleanup,
// trivial-rewrite, qmgr, pickup, ...; unix sockets, FIFOs and the
// master's status pipes between them) with its own config, queue and
// mailbox dirs and smtpd on a loopback port. One message is in the queue
// (submitted by sendmail, deferred: defer_transports names the delivery
// transport); a client is mid-DATA on an SMTP connection, half its
// message sent, smtpd streaming it to cleanup. The whole tree is dumped
// with --tcp-established and restored: the client sends the rest of its
// message on the same connection and postfix queues it; the test lifts
// the deferral (postconf, then postfix reload: SIGHUP to the restored
// master, which starts new daemons) and flushes the queue (postqueue -f,
// through qmgr's FIFO): both messages are delivered, whole, to the
// mailbox file. A new SMTP connection is served too, and `postfix stop`
// ends the restored master.
func TestMailPostfix(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	testutil.RequireTool(t, "postfix")
	master := "/usr/lib/postfix/sbin/master"
	if !fileExists(master) {
		testutil.SkipOrFail(t, "%s is not installed (Debian package postfix)", master)
	}
	work := t.TempDir()
	port := freePort(t, "127.0.0.1")
	conf := setupPostfix(t, work, port)
	env := append(os.Environ(), "MAIL_CONFIG="+conf)
	v := testutil.StartProgram(t, master, "-c", conf, "-d", "-s")
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s\n%s", name, args, err, out, v.LogTail())
		}
		return string(out)
	}
	waitListening(t, v, port)
	mailbox := filepath.Join(work, "mail", "box")
	body := func(n int) string {
		var b strings.Builder
		for i := 0; i < 2000; i++ {
			fmt.Fprintf(&b, "message %d line %d: the quick brown fox jumps over the lazy dog\r\n", n, i)
		}
		return b.String()
	}

	// Message 1, in the queue: sendmail -> postdrop -> maildrop -> pickup.
	cmd := exec.Command("/usr/sbin/sendmail", "-C", conf, "-f", "alice@stasis.test", "queued@stasis.test")
	cmd.Env = env
	cmd.Stdin = strings.NewReader("Subject: queued\r\n\r\n" + body(1))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sendmail: %v\n%s", err, out)
	}
	testutil.WaitFor(t, 20*time.Second, "the queued message to be deferred", func() bool {
		ents, _ := os.ReadDir(filepath.Join(work, "queue", "deferred"))
		return len(ents) > 0
	})

	// Message 2, mid-DATA on a connection kept across the checkpoint.
	s := &smtp{c: dialServer(t, port)}
	s.br = bufio.NewReader(s.c)
	s.reply(t, 220)
	s.cmd(t, "EHLO client.stasis.test", 250)
	s.cmd(t, "MAIL FROM:<bob@stasis.test>", 250)
	s.cmd(t, "RCPT TO:<streamed@stasis.test>", 250)
	s.cmd(t, "DATA", 354)
	b2 := "Subject: streamed\r\n\r\n" + body(2)
	half := len(b2) / 2
	half = strings.LastIndex(b2[:half], "\r\n") + 2
	s.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.c.Write([]byte(b2[:half])); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // smtpd reads it and passes it on to cleanup
	tree := testutil.MustTree(t, v.Pid)
	t.Logf("postfix tree:\n%s", testutil.FormatTree(tree))

	// The master holds a lock on its pid file (as CRIU, stasis wants
	// --file-locks for that).
	st, _ := appRoundTrip(t, v, byStasis, "--tcp-established", "--file-locks")

	s.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.c.Write([]byte(b2[half:] + ".\r\n")); err != nil {
		t.Fatal(err)
	}
	queued := s.reply(t, 250)
	s.cmd(t, "QUIT", 221)
	t.Logf("the restored smtpd: %s", queued)

	var cr ckptRun
	if haveCRIU(t) {
		cr, _ = appRoundTrip(t, v, byCRIU, "--tcp-established", "--file-locks")
	}

	// A new connection after the restore, a third message.
	n := &smtp{c: dialServer(t, port)}
	n.br = bufio.NewReader(n.c)
	n.reply(t, 220)
	n.cmd(t, "HELO late.stasis.test", 250)
	n.cmd(t, "MAIL FROM:<carol@stasis.test>", 250)
	n.cmd(t, "RCPT TO:<late@stasis.test>", 250)
	n.cmd(t, "DATA", 354)
	n.send(t, "Subject: late\r\n\r\n"+body(3)+".")
	n.reply(t, 250)
	n.cmd(t, "QUIT", 221)
	if b, _ := os.ReadFile(mailbox); len(b) > 0 {
		t.Fatalf("mail was delivered while deferred:\n%.500s", b)
	}

	run("/usr/sbin/postconf", "-c", conf, "-e", "defer_transports =")
	run("/usr/sbin/postfix", "-c", conf, "reload")
	run("/usr/sbin/postqueue", "-c", conf, "-f")
	testutil.WaitFor(t, 30*time.Second, "the three messages in the mailbox", func() bool {
		b, _ := os.ReadFile(mailbox)
		return strings.Count(string(b), "\nFrom ")+boolInt(strings.HasPrefix(string(b), "From ")) >= 3
	})
	box, err := os.ReadFile(mailbox)
	if err != nil {
		t.Fatal(err)
	}
	mbox := strings.ReplaceAll(string(box), "\r\n", "\n")
	for i, subj := range []string{"queued", "streamed", "late"} {
		want := strings.ReplaceAll(body(i+1), "\r\n", "\n")
		if !strings.Contains(mbox, "Subject: "+subj+"\n") || !strings.Contains(mbox, want) {
			t.Errorf("message %d (%s) is not in the mailbox whole\n%s", i+1, subj, v.LogTail())
		}
	}
	run("/usr/sbin/postfix", "-c", conf, "stop")
	// The master kills its daemons and then itself by the signal it got.
	if code := v.Wait(t, 15*time.Second); code != 128+int(unix.SIGTERM) {
		t.Errorf("the restored master exited with %d after postfix stop, want %d (SIGTERM)\n%s", code, 128+int(unix.SIGTERM), v.LogTail())
	}
	t.Logf("figures: %s; %s", st, cr)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
