package e2e

import (
	"crypto/md5"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stasis-cr/stasis/internal/testutil"
)

// TestServerPostgres: PostgreSQL, a database made of processes that share
// memory: the shared buffers are a shared anonymous mapping that backends
// fill and then exit, next to a System V segment and /dev/shm segments.
// Clients that come and go load a table (so most of the buffers were last
// touched by processes gone at the dump) while one client keeps its
// connection with a transaction open. After each of two checkpoints the
// kept connection is the same backend and commits its transaction, new
// backends forked by the restored postmaster read every row through the
// buffers and the index, and at the end the server shuts down cleanly and
// a fresh server on the same data directory finds every row: nothing in
// shared memory was lost or written back damaged.
func TestServerPostgres(t *testing.T) {
	testutil.RequireRoot(t)
	t.Parallel()
	bin := postgresBin(t)
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("no postgres user (installed with the postgresql package): %v", err)
	}
	work, err := os.MkdirTemp("", "stasis-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(work, uid, gid); err != nil {
		t.Fatal(err)
	}
	// postgres refuses to run as root: setpriv execs it as postgres, so
	// that the postmaster is the process started.
	asPostgres := func(prog string, args ...string) []string {
		return append([]string{"--reuid=" + u.Uid, "--regid=" + u.Gid, "--init-groups", filepath.Join(bin, prog)}, args...)
	}
	data := filepath.Join(work, "data")
	if out, err := exec.Command("setpriv", asPostgres("initdb", "-D", data, "--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync")...).CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	var v *testutil.Victim
	start := func() *testutil.Victim {
		v := testutil.StartProgram(t, program(t, "setpriv"), asPostgres("postgres", "-D", data, "-p", strconv.Itoa(port), "-k", work,
			"-c", "listen_addresses=127.0.0.1", "-c", "shared_buffers=32MB", "-c", "max_connections=20",
			// No worker that comes and goes on its own: the test's view of
			// the tree is the one dumped.
			"-c", "autovacuum=off")...)
		waitListening(t, v, port)
		v.Comm = testutil.Comm(v.Pid) // setpriv has exec'd postgres
		// It listens before it has recovered: "the database system is
		// starting up".
		testutil.WaitFor(t, 30*time.Second, "postgres to accept queries", func() bool {
			c, err := pgConnect(addr, "postgres", "postgres")
			if err != nil {
				return false
			}
			defer c.close()
			_, err = c.query("select 1")
			return err == nil
		})
		return v
	}
	// once runs sql in a backend of its own, which exits after it.
	once := func(sql string) [][]string {
		t.Helper()
		c, err := pgConnect(addr, "postgres", "postgres")
		if err != nil {
			t.Fatalf("connect to postgres: %v\n%s", err, v.LogTail())
		}
		defer c.close()
		rows, err := c.query(sql)
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return rows
	}
	one := func(sql string) string {
		t.Helper()
		rows := once(sql)
		if len(rows) != 1 || len(rows[0]) != 1 {
			t.Fatalf("%s: rows %q, want one value", sql, rows)
		}
		return rows[0][0]
	}
	v = start()
	once("create table t (id int primary key, v text)")
	once("insert into t select g, md5(g::text) from generate_series(1, 50000) g")
	once("create index t_v on t (v)")
	once("create table big as select g as id, repeat('x', 200) as pad from generate_series(1, 20000) g")
	rows := 50000

	kept, err := pgConnect(addr, "postgres", "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer kept.close()
	keptOne := func(sql string) string {
		t.Helper()
		r, err := kept.query(sql)
		if err != nil || len(r) != 1 || len(r[0]) != 1 {
			t.Fatalf("kept connection: %s: rows %q, %v", sql, r, err)
		}
		return r[0][0]
	}
	backend := keptOne("select pg_backend_pid()")

	check := func(round int) {
		t.Helper()
		if got := keptOne("select pg_backend_pid()"); got != backend {
			t.Errorf("round %d: the kept connection is backend %s, was %s", round, got, backend)
		}
		if got := keptOne("select count(*) from t where id > " + strconv.Itoa(100000*round)); got != strconv.Itoa(round) {
			t.Errorf("round %d: the open transaction sees %s of its own rows, want %d", round, got, round)
		}
		if _, err := kept.query("commit"); err != nil {
			t.Errorf("round %d: commit on the kept connection: %v", round, err)
		}
		rows += round
		if got, want := one("select count(*) from t"), strconv.Itoa(rows); got != want {
			t.Errorf("round %d: a new backend counts %s rows, want %s", round, got, want)
		}
		sum := md5.Sum([]byte("12345"))
		if got := one("select v from t where id = 12345"); got != hex.EncodeToString(sum[:]) {
			t.Errorf("round %d: row 12345 holds %q", round, got)
		}
		if got := one("set enable_seqscan = off; select id from t where v = md5('777')"); got != "777" {
			t.Errorf("round %d: the index finds %q for md5('777'), want 777", round, got)
		}
		if got := one("select count(*) from big where pad = repeat('x', 200)"); got != "20000" {
			t.Errorf("round %d: big has %s good rows, want 20000", round, got)
		}
	}
	for round := 1; round <= 2; round++ {
		// The kept connection's transaction spans the checkpoint.
		if _, err := kept.query("begin; insert into t select " + strconv.Itoa(100000*round) + " + g, 'kept' from generate_series(1, " + strconv.Itoa(round) + ") g"); err != nil {
			t.Fatal(err)
		}
		// The backends of the gone clients exit on their own: the tree is
		// the postmaster, its 4 auxiliary processes and the kept backend.
		testutil.WaitFor(t, 10*time.Second, "the backends of closed connections to exit", func() bool {
			ts, err := testutil.Tree(v.Pid)
			return err == nil && len(ts) == 6
		})
		serverRoundTrip(t, v)
		check(round)
		// Backends that come and go change the buffers between rounds.
		once("update t set v = md5(id::text) where id % 1000 = 0")
	}
	kept.close()
	// A smart shutdown (SIGTERM) writes every buffer back: a clean exit.
	v.TermAndCheck(t)

	v = start()
	if got, want := one("select count(*) from t"), strconv.Itoa(rows); got != want {
		t.Errorf("a fresh server on the data directory counts %s rows, want %s", got, want)
	}
	if got := one("select count(*) from t where v = md5(id::text) or v = 'kept'"); got != strconv.Itoa(rows) {
		t.Errorf("a fresh server finds %s intact rows of %d", got, rows)
	}
	v.TermAndCheck(t)
}

// postgresBin is the directory of the postgres and initdb programs: on
// the PATH, or Debian's /usr/lib/postgresql/VERSION/bin.
func postgresBin(t *testing.T) string {
	t.Helper()
	p := testutil.RequireTool(t, "initdb")
	if _, err := os.Stat(filepath.Join(filepath.Dir(p), "postgres")); err != nil {
		testutil.SkipOrFail(t, "postgresql: no postgres beside %s", p)
	}
	return filepath.Dir(p)
}
