/*
 * unixtail: the long tail of unix sockets (issue 15), one scenario a run.
 *
 *   unixtail READY SCENARIO DIR
 *
 * fifo     S (datagram) bound to DIR/s.sock, its file unlinked and a FIFO
 *          made at DIR/s.sock; D (stream listener) bound to DIR/d.sock,
 *          unlinked, a directory made there. Both keep their names
 *          (getsockname), the FIFO and the directory are still there.
 * rmdir    S (stream listener) bound to DIR/sub/s.sock, the file unlinked
 *          and DIR/sub removed: it keeps its name, DIR/sub stays absent.
 * renamed  S (stream listener) bound to DIR/sub/s.sock, then DIR/sub
 *          renamed DIR/sub2; T (datagram) bound to DIR/a.sock, renamed
 *          DIR/b.sock: both keep their names; clients reach S through
 *          DIR/sub2/s.sock and T through DIR/b.sock; DIR/sub, DIR/a.sock
 *          stay absent.
 * rebound  S1 (datagram) bound to DIR/s.sock, unlinked, then S2 bound to
 *          DIR/s.sock: DIR/s.sock reaches S2 (not S1), both keep the name.
 * unconn   R (datagram, bound to DIR/r.sock) with messages queued from U
 *          (unbound, not connected: sendto) and from B (bound to
 *          DIR/b.sock, not connected), both still open: R reads them in
 *          order with their senders' addresses; U and B send again.
 * shut     a stream pair 10/11: 10 sent "data", then 11 shut down both
 *          ways (SHUT_RDWR) with "data" unread; a seqpacket pair 12/13:
 *          12 sent "m1", "m2" then shut down writing; a datagram pair
 *          14/15: 14 sent "d1", then 15 shut down reading. 11 reads "data"
 *          then EOF, 13 "m1", "m2" then EOF; 15 still has "d1".
 * gone     R (datagram, bound to DIR/r.sock) with messages from B
 *          (bound to DIR/b.sock) and from U (unbound), both closed since:
 *          R reads them in order, B's with its address; DIR/b.sock is gone
 *          (it was unlinked by the program) and R is still bound. fd 12, a
 *          datagram pair's end whose other end sent "p1" and closed, reads it.
 * dgpair   a connected datagram pair 10/11 and a child holding 11 that
 *          blocks in recv(11); the parent's SIGTERM handler sends "bye" on
 *          10: the child gets it and exits 0, the parent reaps it.
 * epoll    an epoll (watching an eventfd with counter 3, EPOLLIN, data
 *          0x77) sent over a stream pair 10/11 with SCM_RIGHTS, closed
 *          here with the eventfd: 11 receives it, epoll_wait gives 0x77.
 */
#include "victim.h"

#include <poll.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

static char dir[256];

static socklen_t mkaddr(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s/%s", dir, name);
	return offsetof(struct sockaddr_un, sun_path) + strlen(a->sun_path) + 1;
}

static int bound(int type, const char *name, int target)
{
	struct sockaddr_un a;
	socklen_t l = mkaddr(&a, name);
	int s = socket(AF_UNIX, type, 0);

	if (s < 0 || bind(s, (struct sockaddr *)&a, l))
		die("bind %s: %s", a.sun_path, strerror(errno));
	if (type == SOCK_STREAM && listen(s, 4))
		die("listen %s: %s", a.sun_path, strerror(errno));
	move_to(s, target);
	return target;
}

static void path(char *p, size_t n, const char *name)
{
	snprintf(p, n, "%s/%s", dir, name);
}

static void check_name(int s, const char *name)
{
	struct sockaddr_un a, w;
	socklen_t l = sizeof(a);

	mkaddr(&w, name);
	memset(&a, 0, sizeof(a));
	if (getsockname(s, (struct sockaddr *)&a, &l))
		fail("fd %d: getsockname: %s", s, strerror(errno));
	else if (strcmp(a.sun_path, w.sun_path))
		fail("fd %d: getsockname gives %s, want %s", s, a.sun_path, w.sun_path);
}

static void check_mode(const char *name, mode_t type)
{
	char p[512];
	struct stat st;

	path(p, sizeof(p), name);
	if (lstat(p, &st))
		fail("%s: %s", p, strerror(errno));
	else if ((st.st_mode & S_IFMT) != type)
		fail("%s: mode %o, want type %o", p, st.st_mode, type);
}

static void check_absent(const char *name)
{
	char p[512];
	struct stat st;

	path(p, sizeof(p), name);
	if (lstat(p, &st) == 0)
		fail("%s exists (mode %o), it was not there before", p, st.st_mode);
}

/* reach connects (stream) or sends (datagram) to DIR/name; the socket
 * target must get it. */
static void reach(int target, int type, const char *name)
{
	struct sockaddr_un a;
	socklen_t l = mkaddr(&a, name);
	int c = socket(AF_UNIX, type, 0);
	char b[8] = "";

	if (type == SOCK_DGRAM) {
		if (sendto(c, "hi", 2, 0, (struct sockaddr *)&a, l) != 2)
			fail("sendto %s: %s", a.sun_path, strerror(errno));
		else if (recv(target, b, sizeof(b), MSG_DONTWAIT) != 2 || memcmp(b, "hi", 2))
			fail("fd %d did not get the datagram sent to %s", target, a.sun_path);
	} else if (connect(c, (struct sockaddr *)&a, l)) {
		fail("connect %s: %s", a.sun_path, strerror(errno));
	} else {
		int s = accept4(target, NULL, NULL, SOCK_NONBLOCK);

		if (s < 0)
			fail("fd %d: accept after connecting to %s: %s", target, a.sun_path, strerror(errno));
		close(s);
	}
	close(c);
}

/* expect reads one message from s: its bytes and, if from is set, its
 * sender's name ("" for an unbound sender). */
static void expect(int s, const char *want, const char *from)
{
	struct sockaddr_un a;
	socklen_t l = sizeof(a);
	char b[64] = "";
	ssize_t n;

	memset(&a, 0, sizeof(a));
	n = recvfrom(s, b, sizeof(b) - 1, MSG_DONTWAIT, (struct sockaddr *)&a, &l);
	if (n < 0) {
		fail("fd %d: recv, want %s: %s", s, want, strerror(errno));
		return;
	}
	b[n] = 0;
	if (strcmp(b, want))
		fail("fd %d: got %s, want %s", s, b, want);
	if (!from)
		return;
	char w[512] = "";

	if (*from)
		path(w, sizeof(w), from);
	if (l <= offsetof(struct sockaddr_un, sun_path))
		a.sun_path[0] = 0;
	if (strcmp(a.sun_path, w))
		fail("fd %d: %s came from '%s', want '%s'", s, want, a.sun_path, w);
}

static void expect_eof(int s)
{
	char b[8];
	ssize_t n = recv(s, b, sizeof(b), MSG_DONTWAIT);

	if (n != 0)
		fail("fd %d: want EOF, got %zd (%s)", s, n, n < 0 ? strerror(errno) : "bytes");
}

static void sendto_name(int s, const char *msg, const char *name)
{
	struct sockaddr_un a;
	socklen_t l = mkaddr(&a, name);

	if (sendto(s, msg, strlen(msg), 0, (struct sockaddr *)&a, l) != (ssize_t)strlen(msg))
		die("sendto %s: %s", a.sun_path, strerror(errno));
}

static int sv10[2];

static void on_term_send(int sig)
{
	(void)sig;
	got_term = 1;
	if (send(10, "bye", 3, MSG_DONTWAIT) != 3)
		fail("send bye on 10: %s", strerror(errno));
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: unixtail READY SCENARIO DIR");
	const char *sc = argv[2];
	char p[512], q[512];
	pid_t child = -1;

	victim_init();
	snprintf(dir, sizeof(dir), "%s", argv[3]);

	if (!strcmp(sc, "fifo")) {
		bound(SOCK_DGRAM, "s.sock", 10);
		bound(SOCK_STREAM, "d.sock", 11);
		path(p, sizeof(p), "s.sock");
		if (unlink(p) || mkfifo(p, 0600))
			die("fifo %s: %s", p, strerror(errno));
		path(p, sizeof(p), "d.sock");
		if (unlink(p) || mkdir(p, 0700))
			die("mkdir %s: %s", p, strerror(errno));
	} else if (!strcmp(sc, "rmdir")) {
		path(p, sizeof(p), "sub");
		mkdir(p, 0700);
		bound(SOCK_STREAM, "sub/s.sock", 10);
		path(q, sizeof(q), "sub/s.sock");
		if (unlink(q) || rmdir(p))
			die("rmdir %s: %s", p, strerror(errno));
	} else if (!strcmp(sc, "renamed")) {
		path(p, sizeof(p), "sub");
		mkdir(p, 0700);
		bound(SOCK_STREAM, "sub/s.sock", 10);
		path(q, sizeof(q), "sub2");
		if (rename(p, q))
			die("rename %s: %s", p, strerror(errno));
		bound(SOCK_DGRAM, "a.sock", 11);
		path(p, sizeof(p), "a.sock");
		path(q, sizeof(q), "b.sock");
		if (rename(p, q))
			die("rename %s: %s", p, strerror(errno));
	} else if (!strcmp(sc, "rebound")) {
		bound(SOCK_DGRAM, "s.sock", 10);
		path(p, sizeof(p), "s.sock");
		if (unlink(p))
			die("unlink %s: %s", p, strerror(errno));
		bound(SOCK_DGRAM, "s.sock", 11);
	} else if (!strcmp(sc, "unconn")) {
		bound(SOCK_DGRAM, "r.sock", 10);
		move_to(socket(AF_UNIX, SOCK_DGRAM, 0), 11);
		bound(SOCK_DGRAM, "b.sock", 12);
		sendto_name(11, "u1", "r.sock");
		sendto_name(12, "b1", "r.sock");
		sendto_name(11, "u2", "r.sock");
	} else if (!strcmp(sc, "shut")) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
			die("socketpair: %s", strerror(errno));
		move_to(sv[0], 10);
		move_to(sv[1], 11);
		if (send(10, "data", 4, 0) != 4 || shutdown(11, SHUT_RDWR))
			die("stream: %s", strerror(errno));
		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
			die("socketpair: %s", strerror(errno));
		move_to(sv[0], 12);
		move_to(sv[1], 13);
		if (send(12, "m1", 2, 0) != 2 || send(12, "m2", 2, 0) != 2 || shutdown(12, SHUT_WR))
			die("seqpacket: %s", strerror(errno));
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv))
			die("socketpair: %s", strerror(errno));
		move_to(sv[0], 14);
		move_to(sv[1], 15);
		if (send(14, "d1", 2, 0) != 2 || shutdown(15, SHUT_RD))
			die("dgram: %s", strerror(errno));
	} else if (!strcmp(sc, "gone")) {
		bound(SOCK_DGRAM, "r.sock", 10);
		int b = bound(SOCK_DGRAM, "b.sock", 11);
		int u = socket(AF_UNIX, SOCK_DGRAM, 0);

		sendto_name(b, "b1", "r.sock");
		sendto_name(u, "u1", "r.sock");
		sendto_name(b, "b2", "r.sock");
		close(b);
		close(u);
		path(p, sizeof(p), "b.sock");
		unlink(p);
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) || send(sv[0], "p1", 2, 0) != 2)
			die("dgram pair: %s", strerror(errno));
		close(sv[0]);
		move_to(sv[1], 12);
	} else if (!strcmp(sc, "dgpair")) {
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv10))
			die("socketpair: %s", strerror(errno));
		move_to(sv10[0], 10);
		move_to(sv10[1], 11);
		child = fork();
		if (child < 0)
			die("fork: %s", strerror(errno));
		if (child == 0) {
			char b[8] = "";

			signal(SIGTERM, SIG_IGN);
			close(10);
			if (recv(11, b, sizeof(b), 0) != 3 || memcmp(b, "bye", 3))
				_exit(3);
			_exit(0);
		}
		close(11);
		struct sigaction sa = { .sa_handler = on_term_send };

		sigaction(SIGTERM, &sa, NULL);
	} else if (!strcmp(sc, "epoll")) {
		int sv[2], ep = epoll_create1(0), ev = eventfd(3, 0);
		struct epoll_event e = { .events = EPOLLIN, .data.u64 = 0x77 };
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { .iov_base = "ep", .iov_len = 2 };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);

		if (ep < 0 || ev < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e))
			die("epoll: %s", strerror(errno));
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
			die("socketpair: %s", strerror(errno));
		move_to(sv[0], 10);
		move_to(sv[1], 11);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &ep, sizeof(int));
		if (sendmsg(10, &m, 0) != 2)
			die("sendmsg: %s", strerror(errno));
		close(ep);
		/* the eventfd stays open in the task: an epoll whose target is
		 * gone has nothing to watch */
		move_to(ev, 20);
	} else {
		die("unknown scenario %s", sc);
	}

	victim_ready(argv[1]);
	victim_wait();

	if (!strcmp(sc, "fifo")) {
		check_name(10, "s.sock");
		check_name(11, "d.sock");
		check_mode("s.sock", S_IFIFO);
		check_mode("d.sock", S_IFDIR);
	} else if (!strcmp(sc, "rmdir")) {
		check_name(10, "sub/s.sock");
		check_absent("sub");
		int v = 0;
		socklen_t l = sizeof(v);

		if (getsockopt(10, SOL_SOCKET, SO_ACCEPTCONN, &v, &l) || !v)
			fail("fd 10 is not listening any more");
	} else if (!strcmp(sc, "renamed")) {
		check_name(10, "sub/s.sock");
		check_name(11, "a.sock");
		check_absent("sub");
		check_absent("a.sock");
		check_mode("sub2/s.sock", S_IFSOCK);
		check_mode("b.sock", S_IFSOCK);
		reach(10, SOCK_STREAM, "sub2/s.sock");
		reach(11, SOCK_DGRAM, "b.sock");
	} else if (!strcmp(sc, "rebound")) {
		check_name(10, "s.sock");
		check_name(11, "s.sock");
		check_mode("s.sock", S_IFSOCK);
		reach(11, SOCK_DGRAM, "s.sock");
		char b[8];

		if (recv(10, b, sizeof(b), MSG_DONTWAIT) >= 0)
			fail("fd 10 (whose file was deleted) got the datagram sent to s.sock");
	} else if (!strcmp(sc, "unconn")) {
		expect(10, "u1", "");
		expect(10, "b1", "b.sock");
		expect(10, "u2", "");
		sendto_name(11, "u3", "r.sock");
		sendto_name(12, "b3", "r.sock");
		expect(10, "u3", "");
		expect(10, "b3", "b.sock");
	} else if (!strcmp(sc, "shut")) {
		expect(11, "data", NULL);
		expect_eof(11);
		expect(13, "m1", NULL);
		expect(13, "m2", NULL);
		expect_eof(13);
		expect(15, "d1", NULL);
		if (send(10, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE)
			fail("send on 10 to a peer shut down: want EPIPE, got %s", strerror(errno));
	} else if (!strcmp(sc, "gone")) {
		expect(10, "b1", "b.sock");
		expect(10, "u1", "");
		expect(10, "b2", "b.sock");
		check_name(10, "r.sock");
		check_absent("b.sock");
		reach(10, SOCK_DGRAM, "r.sock");
		expect(12, "p1", NULL);
	} else if (!strcmp(sc, "dgpair")) {
		int st = 0;

		if (waitpid(child, &st, 0) != child)
			fail("waitpid %d: %s", child, strerror(errno));
		else if (!WIFEXITED(st) || WEXITSTATUS(st))
			fail("child: status %#x, want exit 0 (it got bye)", st);
	} else if (!strcmp(sc, "epoll")) {
		char b[8], cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { .iov_base = b, .iov_len = sizeof(b) };
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c;
		struct epoll_event e;
		int ep = -1;

		if (recvmsg(11, &m, MSG_DONTWAIT) != 2)
			fail("recvmsg: %s", strerror(errno));
		else if (!(c = CMSG_FIRSTHDR(&m)) || c->cmsg_type != SCM_RIGHTS)
			fail("no SCM_RIGHTS with the message");
		else
			memcpy(&ep, CMSG_DATA(c), sizeof(int));
		if (ep >= 0) {
			int n = epoll_wait(ep, &e, 1, 0);

			if (n != 1 || e.data.u64 != 0x77 || !(e.events & EPOLLIN))
				fail("epoll_wait of the received epoll: %d, data %#llx", n, (unsigned long long)e.data.u64);
		}
	}
	victim_finish();
}
