/*
 * unixsk: unix sockets with state to keep.
 *
 *   unixsk READY all DIR
 *   unixsk READY outside-stream PATH    stream socket connected to PATH (fd 30)
 *   unixsk READY outside-dgram PATH     datagram socket connected to PATH (fd 30)
 *   unixsk READY scm DIR                files in flight in queues (SCM_RIGHTS)
 *   unixsk READY scm-inotify -          an inotify in flight on a stream pair 10/11
 *
 * all:
 * - fds 10/11 stream socketpair: 10 sent "s1-hello" + 100000 pattern bytes,
 *   11 sent "s2-world"; 11 O_NONBLOCK with SO_SNDBUF 32768, 10 SO_PASSCRED;
 *   10 owned by the victim (F_SETOWN, no O_ASYNC: whom SIGURG would go to);
 * - fds 12/13 datagram pair, 14/15 seqpacket pair: 3 and 2 messages queued
 *   each way, read back one by one with their boundaries;
 * - fd 16 stream listener on DIR/listen.sock (mode 0640, backlog 8) with two
 *   connections waiting (clients fds 17, 18, nothing sent): after the
 *   restore it accepts both, each client sends its name and gets an ack;
 * - fd 19 datagram bound to the abstract name "stasis-unixsk-PID", fd 20
 *   connected to it, 3 messages queued; one more is sent after the restore;
 * - fds 21/22 stream pair, 21 sent "bye" and shut down writing: 22 reads
 *   "bye" then EOF, 21 can still read, writes on 21 fail with EPIPE;
 * - fds 23/24 stream pair, 24 held by a child (23 closed there): each end
 *   has a message from the other queued; the child checks its own.
 * outside-*: the socket is still connected: the test reads what it sends.
 * scm (files in flight, sent and not yet received):
 * - fds 10/11 stream pair: 10 sent "before", then "fds!" carrying fd 40 (the
 *   file DIR/scm.data, O_RDWR at offset 1234, kept) and the write end of a
 *   pipe whose read end is fd 41 (the write end is closed here; "buffered"
 *   is in the pipe), then "after". 11 reads "before" without files (a read
 *   stops short of the bytes that came with files), then "fds!" with both:
 *   the file is fd 40's inode at 1234, and a write through it moves fd 40's
 *   offset (one open file description); a write through the pipe end
 *   arrives on fd 41 after "buffered".
 * - fds 12/13 seqpacket pair: 12 sent "m1" carrying a memfd ("memfd-content")
 *   and an eventfd (counter 5), both closed here, then "m2" with no file,
 *   then "m3" carrying fd 15 of a stream pair 14/15 (closed here; 14 sent
 *   "to-15" on it) and fd 13 itself: 13 reads each with its files, the
 *   memfd's content, the eventfd's counter, "to-15" on the socket received,
 *   which then talks to 14, and the fd 13 received is fd 13's socket.
 * scm-inotify: an inotify (fd 40, kept) in flight, which stasis refuses: the
 * message and its file must still be there after the failed dump.
 */
#include "victim.h"
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#define BIG 100000

static unsigned char big[BIG];

static void pair(int type, int a, int b)
{
	int sv[2];

	if (socketpair(AF_UNIX, type, 0, sv))
		die("socketpair: %s", strerror(errno));
	move_to(sv[0], 100);
	move_to(sv[1], b);
	move_to(100, a);
}

static void send_all(int fd, const void *p, size_t n)
{
	if (send(fd, p, n, 0) != (ssize_t)n)
		die("send %zu bytes on fd %d: %s", n, fd, strerror(errno));
}

static int wait_in(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, ms) == 1;
}

/* expect_msg reads one message (or, for a stream, exactly strlen bytes). */
static void expect_msg(int fd, const char *want, int stream)
{
	char buf[256];
	size_t n = strlen(want);
	ssize_t got;

	if (!wait_in(fd, 2000)) {
		fail("fd %d: nothing to read, want \"%s\"", fd, want);
		return;
	}
	got = recv(fd, buf, stream ? n : sizeof(buf), stream ? MSG_WAITALL : 0);
	if (got < 0) {
		fail("fd %d: recv: %s (want \"%s\")", fd, strerror(errno), want);
		return;
	}
	if ((size_t)got != n || memcmp(buf, want, n))
		fail("fd %d: read \"%.*s\" (%zd bytes), want \"%s\"", fd, (int)(got > 0 ? got : 0), buf, got, want);
}

static void expect_big(int fd)
{
	static unsigned char got[BIG];
	size_t off = 0;

	while (off < BIG) {
		ssize_t n;

		if (!wait_in(fd, 2000))
			break;
		n = recv(fd, got + off, BIG - off, 0);
		if (n <= 0)
			break;
		off += n;
	}
	if (off != BIG || memcmp(got, big, BIG))
		fail("fd %d: %zu of %d pattern bytes, or not in order", fd, off, BIG);
}

static void expect_empty(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);

	if (n >= 0 || errno != EAGAIN)
		fail("fd %d: more queued than expected (recv gives %zd)", fd, n);
}

static void check_opt(int fd, int opt, const char *name, int want)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, opt, &v, &l))
		fail("fd %d: getsockopt %s: %s", fd, name, strerror(errno));
	else if (v != want)
		fail("fd %d: %s is %d, want %d", fd, name, v, want);
}

static int getopt_int(int fd, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, opt, &v, &l))
		die("getsockopt %d on fd %d: %s", opt, fd, strerror(errno));
	return v;
}

static struct sockaddr_un path_addr(const char *path, socklen_t *len)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	if (strlen(path) >= sizeof(a.sun_path))
		die("path too long: %s", path);
	strcpy(a.sun_path, path);
	*len = offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
	return a;
}

static pid_t child;
static int sndbuf11;
static char listen_path[108], abstract_name[64];

static void child_main(pid_t parent)
{
	close(23);
	send_all(24, "to-parent", 9);
	while (!got_term) {
		if (getppid() != parent) {
			fail("child %d: its parent changed", getpid());
			exit(1);
		}
		sleep_ms(10);
	}
	expect_msg(24, "to-child", 1);
	send_all(24, "child-ok", 8);
	exit(victim_failures ? 1 : 0);
}

static void setup_all(const char *dir)
{
	struct sockaddr_un a;
	socklen_t al;
	int one = 1, v = 32768;

	for (size_t i = 0; i < BIG; i++)
		big[i] = (unsigned char)(i * 7 + i / 251);

	pair(SOCK_STREAM, 10, 11);
	if (fcntl(10, F_SETOWN, getpid()))
		die("F_SETOWN: %s", strerror(errno));
	if (setsockopt(11, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)) || setsockopt(10, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)))
		die("setsockopt: %s", strerror(errno));
	sndbuf11 = getopt_int(11, SO_SNDBUF);
	send_all(10, "s1-hello", 8);
	send_all(10, big, BIG);
	send_all(11, "s2-world", 8);
	if (fcntl(11, F_SETFL, O_NONBLOCK))
		die("fcntl: %s", strerror(errno));

	pair(SOCK_DGRAM, 12, 13);
	pair(SOCK_SEQPACKET, 14, 15);
	for (int fd = 12; fd <= 14; fd += 2) {
		const char *p = fd == 12 ? "d" : "q";
		char m[32];

		for (int i = 1; i <= 3; i++) {
			snprintf(m, sizeof(m), "%s-a%.*s", p, i, "123");
			send_all(fd, m, strlen(m));
		}
		for (int i = 1; i <= 2; i++) {
			snprintf(m, sizeof(m), "%s-b%.*s", p, i, "45");
			send_all(fd + 1, m, strlen(m));
		}
	}

	snprintf(listen_path, sizeof(listen_path), "%s/listen.sock", dir);
	a = path_addr(listen_path, &al);
	move_to(socket(AF_UNIX, SOCK_STREAM, 0), 16);
	if (bind(16, (struct sockaddr *)&a, al) || chmod(listen_path, 0640) || listen(16, 8))
		die("listener on %s: %s", listen_path, strerror(errno));
	for (int fd = 17; fd <= 18; fd++) {
		move_to(socket(AF_UNIX, SOCK_STREAM, 0), fd);
		if (connect(fd, (struct sockaddr *)&a, al))
			die("connect to %s: %s", listen_path, strerror(errno));
	}

	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	snprintf(abstract_name, sizeof(abstract_name), "stasis-unixsk-%d", getpid());
	memcpy(a.sun_path + 1, abstract_name, strlen(abstract_name));
	al = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(abstract_name);
	move_to(socket(AF_UNIX, SOCK_DGRAM, 0), 19);
	move_to(socket(AF_UNIX, SOCK_DGRAM, 0), 20);
	if (bind(19, (struct sockaddr *)&a, al) || connect(20, (struct sockaddr *)&a, al))
		die("abstract %s: %s", abstract_name, strerror(errno));
	send_all(20, "ab1", 3);
	send_all(20, "ab22", 4);
	send_all(20, "ab333", 5);

	pair(SOCK_STREAM, 21, 22);
	send_all(21, "bye", 3);
	if (shutdown(21, SHUT_WR))
		die("shutdown: %s", strerror(errno));

	pair(SOCK_STREAM, 23, 24);
	send_all(23, "to-child", 8);
	pid_t parent = getpid();
	child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0)
		child_main(parent);
	close(24);
	if (!wait_in(23, 5000))
		die("nothing from the child");
}

static void check_all(void)
{
	char buf[64];
	struct sockaddr_un a;
	socklen_t al = sizeof(a);
	struct stat st;
	int conns[2], seen = 0, status;

	/* stream pair: byte order, both ways; options and flags */
	expect_msg(11, "s1-hello", 1);
	expect_big(11);
	expect_msg(10, "s2-world", 1);
	expect_empty(10);
	expect_empty(11);
	check_opt(11, SO_SNDBUF, "SO_SNDBUF", sndbuf11);
	check_opt(10, SO_PASSCRED, "SO_PASSCRED", 1);
	if (fcntl(10, F_GETOWN) != getpid())
		fail("fd 10: owner %d, want %d (F_SETOWN)", fcntl(10, F_GETOWN), getpid());
	check_opt(11, SO_PASSCRED, "SO_PASSCRED", 0);
	if (!(fcntl(11, F_GETFL) & O_NONBLOCK) || (fcntl(10, F_GETFL) & O_NONBLOCK))
		fail("O_NONBLOCK: fd 11 %#x, fd 10 %#x", fcntl(11, F_GETFL), fcntl(10, F_GETFL));
	check_opt(10, SO_TYPE, "SO_TYPE", SOCK_STREAM);
	send_all(10, "again", 5);
	expect_msg(11, "again", 1);

	/* datagram and seqpacket pairs: boundaries */
	for (int fd = 12; fd <= 14; fd += 2) {
		const char *p = fd == 12 ? "d" : "q";
		char m[32];

		check_opt(fd, SO_TYPE, "SO_TYPE", fd == 12 ? SOCK_DGRAM : SOCK_SEQPACKET);
		for (int i = 1; i <= 3; i++) {
			snprintf(m, sizeof(m), "%s-a%.*s", p, i, "123");
			expect_msg(fd + 1, m, 0);
		}
		for (int i = 1; i <= 2; i++) {
			snprintf(m, sizeof(m), "%s-b%.*s", p, i, "45");
			expect_msg(fd, m, 0);
		}
		expect_empty(fd);
		expect_empty(fd + 1);
		send_all(fd, "x", 1);
		expect_msg(fd + 1, "x", 0);
	}

	/* listener with two connections waiting */
	if (getsockname(16, (struct sockaddr *)&a, &al) || strcmp(a.sun_path, listen_path))
		fail("listener: getsockname gives \"%s\", want %s", al > 2 ? a.sun_path : "", listen_path);
	if (stat(listen_path, &st) || !S_ISSOCK(st.st_mode) || (st.st_mode & 07777) != 0640)
		fail("%s: not a socket of mode 0640 (mode %#o)", listen_path, st.st_mode);
	check_opt(16, SO_ACCEPTCONN, "SO_ACCEPTCONN", 1);
	send_all(17, "c17", 3);
	send_all(18, "c18", 3);
	for (int i = 0; i < 2; i++) {
		if (!wait_in(16, 2000)) {
			fail("listener: connection %d not waiting", i + 1);
			conns[i] = -1;
			continue;
		}
		conns[i] = accept(16, NULL, NULL);
		if (conns[i] < 0 || !wait_in(conns[i], 2000) || recv(conns[i], buf, 3, MSG_WAITALL) != 3) {
			fail("connection %d: accept or read failed: %s", i + 1, strerror(errno));
			continue;
		}
		if (!memcmp(buf, "c17", 3))
			seen |= 1;
		else if (!memcmp(buf, "c18", 3))
			seen |= 2;
		char ack[8] = "ack";
		memcpy(ack + 3, buf, 3);
		send_all(conns[i], ack, 6);
	}
	if (seen != 3)
		fail("listener: got clients %#x, want both (3)", seen);
	expect_msg(17, "ackc17", 1);
	expect_msg(18, "ackc18", 1);
	if (wait_in(16, 0))
		fail("listener: a third connection is waiting");

	/* abstract datagram receiver */
	al = sizeof(a);
	if (getsockname(19, (struct sockaddr *)&a, &al) || a.sun_path[0] ||
	    al != offsetof(struct sockaddr_un, sun_path) + 1 + strlen(abstract_name) ||
	    memcmp(a.sun_path + 1, abstract_name, strlen(abstract_name)))
		fail("fd 19: not bound to @%s", abstract_name);
	expect_msg(19, "ab1", 0);
	expect_msg(19, "ab22", 0);
	expect_msg(19, "ab333", 0);
	send_all(20, "ab-after", 8);
	expect_msg(19, "ab-after", 0);

	/* shut down for writing */
	expect_msg(22, "bye", 1);
	if (recv(22, buf, 1, MSG_DONTWAIT) != 0)
		fail("fd 22: no EOF after \"bye\"");
	send_all(22, "back", 4);
	expect_msg(21, "back", 1);
	if (send(21, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0 || errno != EPIPE)
		fail("fd 21: write after SHUT_WR did not fail with EPIPE");

	/* the pair shared with the child */
	expect_msg(23, "to-parent", 1);
	kill(child, SIGTERM);
	expect_msg(23, "child-ok", 1);
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("child %d: status %#x", child, status);
}

/* recv_fds receives one message on fd and the files it carries. */
static ssize_t recv_fds(int fd, char *buf, size_t len, int *fds, int max, int *nfds)
{
	char c[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof(c) };
	struct cmsghdr *ch;
	ssize_t n;

	*nfds = 0;
	if (!wait_in(fd, 2000))
		return -1;
	n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	for (ch = CMSG_FIRSTHDR(&mh); n >= 0 && ch; ch = CMSG_NXTHDR(&mh, ch)) {
		if (ch->cmsg_level != SOL_SOCKET || ch->cmsg_type != SCM_RIGHTS)
			continue;
		int k = (ch->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (int i = 0; i < k; i++) {
			int f;

			memcpy(&f, CMSG_DATA(ch) + i * sizeof(int), sizeof(int));
			if (*nfds < max)
				fds[(*nfds)++] = f;
			else
				close(f);
		}
	}
	return n;
}

static void send_fds(int fd, const char *msg, const int *fds, int n)
{
	char c[CMSG_SPACE(sizeof(int) * 8)];
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = strlen(msg) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = c, .msg_controllen = CMSG_SPACE(sizeof(int) * n) };
	struct cmsghdr *ch = CMSG_FIRSTHDR(&mh);

	ch->cmsg_level = SOL_SOCKET;
	ch->cmsg_type = SCM_RIGHTS;
	ch->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(ch), fds, sizeof(int) * n);
	if (sendmsg(fd, &mh, 0) != (ssize_t)strlen(msg))
		die("sendmsg \"%s\" with %d files on fd %d: %s", msg, n, fd, strerror(errno));
}

/* expect_fds receives want on fd, carrying n files. */
static int expect_fds(int fd, const char *want, int *fds, int n)
{
	char buf[64];
	int got;
	ssize_t len = recv_fds(fd, buf, sizeof(buf), fds, 8, &got);

	if (len != (ssize_t)strlen(want) || memcmp(buf, want, len)) {
		fail("fd %d: received \"%.*s\" (%zd bytes), want \"%s\"", fd, (int)(len > 0 ? len : 0), buf, len, want);
		return 0;
	}
	if (got != n) {
		fail("fd %d: \"%s\" came with %d files, want %d", fd, want, got, n);
		return 0;
	}
	return 1;
}

static ino_t ino_of(int fd)
{
	struct stat st;

	return fstat(fd, &st) ? 0 : st.st_ino;
}

static void setup_scm(const char *dir)
{
	char path[4096], fill[4096];
	int p[2], fds[2];

	snprintf(path, sizeof(path), "%s/scm.data", dir);
	memset(fill, 'z', sizeof(fill));
	move_to(open(path, O_RDWR | O_CREAT | O_TRUNC, 0600), 40);
	if (write(40, fill, sizeof(fill)) != sizeof(fill) || lseek(40, 1234, SEEK_SET) != 1234)
		die("fill %s: %s", path, strerror(errno));
	if (pipe(p))
		die("pipe: %s", strerror(errno));
	move_to(p[0], 41);
	if (write(p[1], "buffered", 8) != 8)
		die("write the pipe: %s", strerror(errno));
	pair(SOCK_STREAM, 10, 11);
	send_all(10, "before", 6);
	fds[0] = 40;
	fds[1] = p[1];
	send_fds(10, "fds!", fds, 2);
	close(p[1]);
	send_all(10, "after", 5);

	pair(SOCK_SEQPACKET, 12, 13);
	fds[0] = memfd_create("scm-memfd", MFD_CLOEXEC);
	if (fds[0] < 0 || write(fds[0], "memfd-content", 13) != 13)
		die("memfd: %s", strerror(errno));
	fds[1] = eventfd(5, EFD_CLOEXEC);
	if (fds[1] < 0)
		die("eventfd: %s", strerror(errno));
	send_fds(12, "m1", fds, 2);
	close(fds[0]);
	close(fds[1]);
	send_all(12, "m2", 2);
	pair(SOCK_STREAM, 14, 15);
	send_all(14, "to-15", 5);
	fds[0] = 15;
	fds[1] = 13;
	send_fds(12, "m3", fds, 2);
	close(15);
}

static void check_scm(void)
{
	char buf[64];
	int f[8], n;
	ssize_t len;
	uint64_t count = 0;

	/* the stream: "before" alone, then "fds!" with its files */
	len = recv_fds(11, buf, 6, f, 8, &n);
	if (len != 6 || memcmp(buf, "before", 6) || n != 0)
		fail("fd 11: first read \"%.*s\" (%zd bytes) with %d files, want \"before\" and none", (int)(len > 0 ? len : 0), buf, len, n);
	if (expect_fds(11, "fds!", f, 2)) {
		off_t pos = lseek(f[0], 0, SEEK_CUR);

		if (ino_of(f[0]) != ino_of(40) || pos != 1234)
			fail("fd 11: the file received is inode %lu at %lld, want fd 40's %lu at 1234",
			     (unsigned long)ino_of(f[0]), (long long)pos, (unsigned long)ino_of(40));
		if (write(f[0], "abc", 3) != 3 || lseek(40, 0, SEEK_CUR) != 1237)
			fail("fd 11: a write through the file received does not move fd 40's offset (%lld): not one open file",
			     (long long)lseek(40, 0, SEEK_CUR));
		if (write(f[1], "via-pipe", 8) != 8)
			fail("fd 11: write through the pipe end received: %s", strerror(errno));
		close(f[0]);
		close(f[1]);
		len = read(41, buf, sizeof(buf));
		if (len != 16 || memcmp(buf, "bufferedvia-pipe", 16))
			fail("fd 41: read \"%.*s\" from the pipe, want \"bufferedvia-pipe\"", (int)(len > 0 ? len : 0), buf);
	}
	expect_msg(11, "after", 1);
	expect_empty(11);

	/* the seqpacket: boundaries, files by message */
	if (expect_fds(13, "m1", f, 2)) {
		len = pread(f[0], buf, sizeof(buf), 0);
		if (len != 13 || memcmp(buf, "memfd-content", 13))
			fail("fd 13: memfd received holds \"%.*s\"", (int)(len > 0 ? len : 0), buf);
		if (read(f[1], &count, 8) != 8 || count != 5)
			fail("fd 13: eventfd received counts %llu, want 5", (unsigned long long)count);
		close(f[0]);
		close(f[1]);
	}
	expect_fds(13, "m2", f, 0);
	if (expect_fds(13, "m3", f, 2)) {
		expect_msg(f[0], "to-15", 1);
		send_all(f[0], "from-15", 7);
		expect_msg(14, "from-15", 1);
		if (ino_of(f[1]) != ino_of(13))
			fail("fd 13: the socket received with m3 is not fd 13's");
		close(f[0]);
		close(f[1]);
	}
	expect_empty(13);
}

static void check_scm_inotify(void)
{
	int f[8];

	if (expect_fds(11, "fd", f, 1) && ino_of(f[0]) != ino_of(40))
		fail("fd 11: the inotify passed with the message is another file");
	expect_empty(11);
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: unixsk READY all DIR | outside-stream PATH | outside-dgram PATH | scm DIR | scm-inotify -");
	victim_init();
	signal(SIGPIPE, SIG_IGN);
	const char *mode = argv[2];
	int outside = strncmp(mode, "outside-", 8) == 0;

	if (!strcmp(mode, "all")) {
		setup_all(argv[3]);
	} else if (outside) {
		socklen_t al;
		struct sockaddr_un a = path_addr(argv[3], &al);

		move_to(socket(AF_UNIX, strcmp(mode, "outside-stream") ? SOCK_DGRAM : SOCK_STREAM, 0), 30);
		if (connect(30, (struct sockaddr *)&a, al))
			die("connect to %s: %s", argv[3], strerror(errno));
		send_all(30, "before", 6);
	} else if (!strcmp(mode, "scm")) {
		setup_scm(argv[3]);
	} else if (!strcmp(mode, "scm-inotify")) {
		int ep = 40;

		move_to(inotify_init1(0), 40);
		pair(SOCK_STREAM, 10, 11);
		send_fds(10, "fd", &ep, 1);
	} else {
		die("unknown mode %s", mode);
	}

	victim_ready(argv[1]);
	victim_wait();

	if (outside && send(30, "after", 5, MSG_NOSIGNAL) != 5)
		fail("fd 30: send after the restore: %s", strerror(errno));
	else if (!strcmp(mode, "scm"))
		check_scm();
	else if (!strcmp(mode, "scm-inotify"))
		check_scm_inotify();
	else if (!outside)
		check_all();
	victim_finish();
}
