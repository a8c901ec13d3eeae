package e2e

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestServerMariaDB: MariaDB 10.11 (Debian's stand-in for MySQL), one
// process of some twenty threads with InnoDB's files locked and, with its
// defaults, an 8 TiB PROT_NONE reservation for the buffer pool
// (innodb_buffer_pool_size_max), which must cost the dump nothing. A
// client keeps its connection with a transaction open that inserted rows
// while another inserts row after row all along; the server is dumped
// (--tcp-established --file-locks), killed and restored twice, by stasis
// and then by CRIU 4.2 for the figures beside stasis'. After each
// checkpoint the kept connection is the same (CONNECTION_ID()), sees its
// own rows, inserts more and commits; a new connection counts every row
// and CHECK TABLE finds the table sound. At the end the server shuts down
// cleanly and a fresh server on the data directory starts without crash
// recovery and finds every row.
//
// InnoDB's default asynchronous I/O is io_uring, which CRIU 4.2 does not
// checkpoint: the server runs with --innodb-use-native-aio=0 (a pool of
// threads doing synchronous I/O). TestServerMariaDBIOUring runs it with
// its defaults, io_uring included, by stasis alone.
func TestServerMariaDB(t *testing.T) {
	testServerMariaDB(t, false)
}

// TestServerMariaDBIOUring: TestServerMariaDB with InnoDB's io_uring
// (the default), by stasis only. The ring is idle between InnoDB's page
// reads and writes; a dump that finds requests in flight is refused and
// tried again (appRoundTrip).
func TestServerMariaDBIOUring(t *testing.T) {
	testServerMariaDB(t, true)
}

func testServerMariaDB(t *testing.T, uring bool) {
	testutil.RequireRoot(t)
	t.Parallel()
	mariadbd := testutil.RequireTool(t, "mariadbd")
	installDB := testutil.RequireTool(t, "mariadb-install-db")
	work := t.TempDir()
	data := filepath.Join(work, "data")
	// The server's own options, the same for the bootstrap and every
	// start; everything else is MariaDB's default. Its own tmpdir: two
	// bootstraps at once in /tmp collide on their temporary tables'
	// names ("Could not remove temporary table", then the install fails).
	opts := []string{"--no-defaults", "--datadir=" + data, "--tmpdir=" + work, "--user=root", "--skip-name-resolve"}
	tools := []ckptTool{byStasis}
	if !uring {
		opts = append(opts, "--innodb-use-native-aio=0")
		tools = ckptTools(t, false)
	}
	install := exec.Command(installDB, append(opts, "--auth-root-authentication-method=normal", "--skip-test-db")...)
	start := time.Now()
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	t.Logf("mariadb-install-db: %v", time.Since(start).Round(time.Millisecond))
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	errLog := func(n int) string { return filepath.Join(work, "error-"+strconv.Itoa(n)+".log") }
	var v *testutil.Victim
	startServer := func(n int) *testutil.Victim {
		t.Helper()
		start := time.Now()
		v := testutil.StartProgram(t, mariadbd, append(opts, "--port="+strconv.Itoa(port), "--bind-address=127.0.0.1",
			"--socket="+filepath.Join(work, "mysqld.sock"), "--pid-file="+filepath.Join(work, "mysqld.pid"),
			"--log-error="+errLog(n))...)
		waitListening(t, v, port)
		t.Logf("mariadbd start %d: listening after %v", n, time.Since(start).Round(time.Millisecond))
		return v
	}
	connect := func() *myConn {
		t.Helper()
		c, err := myConnect(addr, "root")
		if err != nil {
			t.Fatalf("connect to mariadb: %v\n%s", err, readTail(errLog(1)))
		}
		return c
	}
	// one runs sql on a connection of its own, closed after it.
	one := func(sql string) string {
		t.Helper()
		c := connect()
		defer c.close()
		rows, err := c.query(sql)
		if err != nil || len(rows) != 1 || len(rows[0]) != 1 {
			t.Fatalf("%s: rows %q, %v", sql, rows, err)
		}
		return rows[0][0]
	}
	must := func(c *myConn, sql string) [][]string {
		t.Helper()
		rows, err := c.query(sql)
		if err != nil {
			t.Fatal(err)
		}
		return rows
	}
	checkTable := func(when string) {
		t.Helper()
		c := connect()
		defer c.close()
		rows := must(c, "check table d.t extended")
		if last := rows[len(rows)-1]; len(last) != 4 || last[2] != "status" || last[3] != "OK" {
			t.Errorf("%s: CHECK TABLE d.t: %q, want status OK", when, rows)
		}
	}

	v = startServer(1)
	if got := one("select @@innodb_buffer_pool_size_max"); got != strconv.Itoa(8<<40) {
		t.Logf("innodb_buffer_pool_size_max is %s, not the 8 TiB default", got)
	}
	admin := connect()
	const base = 20000
	must(admin, "create database d")
	must(admin, "create table d.t (id int primary key, v char(32) not null, key (v)) engine=innodb default charset=utf8mb4")
	must(admin, "insert into d.t select seq, md5(seq) from d.seq_1_to_"+strconv.Itoa(base))
	must(admin, "create table d.ticks (i bigint primary key) engine=innodb")
	admin.close()
	rows := base

	kept := connect()
	defer kept.close()
	id := strconv.FormatUint(uint64(kept.ID), 10)
	keptOne := func(sql string) string {
		t.Helper()
		r, err := kept.query(sql)
		if err != nil || len(r) != 1 || len(r[0]) != 1 {
			t.Fatalf("kept connection: %s: rows %q, %v\n%s", sql, r, err, readTail(errLog(1)))
		}
		return r[0][0]
	}
	if got := keptOne("select connection_id()"); got != id {
		t.Fatalf("CONNECTION_ID() %s, the handshake said %s", got, id)
	}
	// Another connection inserts a row per request all along, autocommit:
	// each insert is answered once, none is lost or done twice.
	q := connect()
	defer q.close()
	busy := startBusy(func(i int64) error {
		_, err := q.query("insert into d.ticks values (" + strconv.FormatInt(i, 10) + ")")
		return err
	})

	var runs []ckptRun
	if uring {
		if n := uringFds(t, v.Pid); n != 1 {
			t.Fatalf("mariadbd holds %d io_uring fds, want its one", n)
		}
	}
	for round, tool := range tools {
		// The kept connection's transaction spans the checkpoint: rows
		// inserted before it, more after it, then the commit.
		lo := 100000 * (round + 1)
		must(kept, "begin")
		must(kept, "insert into d.t select "+strconv.Itoa(lo)+" + seq, 'kept' from d.seq_1_to_500")
		run, _ := appRoundTrip(t, v, tool, "--tcp-established", "--file-locks")
		if run.refused != "" {
			t.Fatalf("%s", run)
		}
		runs = append(runs, run)
		if got := keptOne("select connection_id()"); got != id {
			t.Errorf("%s: the kept connection is connection %s, was %s", tool, got, id)
		}
		if got := keptOne("select @@in_transaction"); got != "1" {
			t.Errorf("%s: the kept connection's transaction is gone (@@in_transaction %s)", tool, got)
		}
		must(kept, "insert into d.t select "+strconv.Itoa(lo)+" + seq, 'kept' from d.seq_501_to_1000")
		if got := keptOne("select count(*) from d.t where id > " + strconv.Itoa(lo)); got != "1000" {
			t.Errorf("%s: the open transaction sees %s of its own rows, want 1000", tool, got)
		}
		if got := one("select count(*) from d.t"); got != strconv.Itoa(rows) {
			t.Errorf("%s: before the commit, another connection counts %s rows, want %d", tool, got, rows)
		}
		must(kept, "commit")
		rows += 1000
		if got := one("select count(*) from d.t"); got != strconv.Itoa(rows) {
			t.Errorf("%s: after the commit, a new connection counts %s rows, want %d", tool, got, rows)
		}
		if got := one("select id from d.t force index (v) where v = md5(7777)"); got != "7777" {
			t.Errorf("%s: the index finds %q for md5(7777), want 7777", tool, got)
		}
		checkTable(string(tool))
	}
	busy.end(t, busy.n.Load())
	ticks := busy.n.Load()
	if got := one("select count(*) from d.ticks"); got != strconv.FormatInt(ticks, 10) {
		t.Errorf("the busy client's %d inserts left %s rows", ticks, got)
	}
	q.close()
	kept.close()
	t.Logf("mariadbd, the same run: %s", figures(runs))
	if uring && uringFds(t, v.Pid) != 1 {
		t.Errorf("the restored mariadbd does not hold its io_uring")
	}

	// A clean shutdown (SIGTERM) writes the buffer pool back.
	v.TermAndCheck(t)
	v = startServer(2)
	if got := one("select count(*) from d.t"); got != strconv.Itoa(rows) {
		t.Errorf("a fresh server on the data directory counts %s rows, want %d", got, rows)
	}
	if got := one("select count(*) from d.t where v = md5(id) or v = 'kept'"); got != strconv.Itoa(rows) {
		t.Errorf("a fresh server finds %s intact rows of %d", got, rows)
	}
	if got := one("select count(*) from d.ticks"); got != strconv.FormatInt(ticks, 10) {
		t.Errorf("a fresh server finds %s ticks, want %d", got, ticks)
	}
	checkTable("the fresh server")
	checkImages(t, runs)
	b, err := os.ReadFile(errLog(2))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(strings.ToLower(l), "recover") {
			t.Errorf("the fresh server recovered: the shutdown after the restores was not clean:\n%s", l)
		}
	}
	v.TermAndCheck(t)
}
