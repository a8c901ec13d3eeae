/*
 * mixed: a small multi-process, multithreaded tree that keeps talking over
 * a pipe, a unix socket and a TCP connection, for the fault-injection test
 * (stasis interrupted or killed at many points of a dump or restore must
 * leave it running and intact).
 *
 *   mixed READY PORT STATUS_FILE
 *
 * - the root connects to 127.0.0.1:PORT, an echo peer run by the test
 *   (PORT 0: no TCP connection);
 * - it forks a child (pdeath SIGKILL) and starts two threads that count;
 * - every 20 ms the root writes the next sequence number into a pipe the
 *   child reads (the child checks the order), asks the child over a unix
 *   stream socketpair for n+1, and sends n over TCP and reads it back
 *   (TCP_QUICKACK, so that nothing of ours waits unacknowledged while the
 *   tree is frozen); then it pwrite()s the round count, fixed width, at
 *   offset 0 of STATUS_FILE;
 * - on SIGTERM: the threads must still count, the child gets "end" over
 *   the socket, reads the pipe to EOF (every number exactly once) and exits
 *   0, which the root waits for; a last TCP round trip; any wrong answer at
 *   any time is a FAIL.
 */
#include "victim.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define END 0xffffffffu
#define READY 0xfffffffeu

static volatile uint64_t counts[2];

static void *counter(void *arg)
{
	volatile uint64_t *c = arg;

	for (;;) {
		(*c)++;
		sleep_ms(1);
	}
	return NULL;
}

/* full does a whole read or write, retrying EINTR (a SIGTERM, a restart). */
static int full(int fd, void *buf, size_t n, int wr)
{
	char *p = buf;

	while (n > 0) {
		ssize_t r = wr ? write(fd, p, n) : read(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= r;
	}
	return 0;
}

static void child(int pipe_r, int sk)
{
	uint32_t want = 0, n;
	int bad = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGTERM, SIG_IGN); /* the root ends it over the socket */
	/* Set up: the root is ready only then (a test snapshots every
	 * thread's signal state at ready). */
	n = READY;
	if (full(sk, &n, sizeof(n), 1))
		die("child: write unix socket: %s", strerror(errno));
	for (;;) {
		if (full(sk, &n, sizeof(n), 0))
			die("child: read unix socket: %s", errno ? strerror(errno) : "EOF");
		if (n == END)
			break;
		n++;
		if (full(sk, &n, sizeof(n), 1))
			die("child: write unix socket: %s", strerror(errno));
		/* The pipe carries the same numbers, one per round. */
		if (full(pipe_r, &n, sizeof(n), 0)) {
			fail("child: pipe: %s at %u", errno ? strerror(errno) : "EOF", want);
			bad = 1;
			continue;
		}
		if (n != want) {
			fail("child: pipe gave %u, want %u", n, want);
			bad = 1;
		}
		want = n + 1;
	}
	if (read(pipe_r, &n, 1) != 0) {
		fail("child: pipe holds more after %u", want);
		bad = 1;
	}
	_exit(bad);
}

int main(int argc, char **argv)
{
	int p[2], sk[2], tcp, one = 1, status_fd;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	pthread_t th[2];
	uint32_t n, round = 0;
	pid_t kid;
	int st;

	if (argc != 4)
		die("usage: mixed READY PORT STATUS_FILE");
	victim_init();
	status_fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (status_fd < 0)
		die("open %s: %s", argv[3], strerror(errno));
	tcp = -1;
	if (atoi(argv[2]) != 0) {
		tcp = socket(AF_INET, SOCK_STREAM, 0);
		sa.sin_port = htons(atoi(argv[2]));
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (tcp < 0 || connect(tcp, (struct sockaddr *)&sa, sizeof(sa)))
			die("connect to port %s: %s", argv[2], strerror(errno));
		setsockopt(tcp, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (pipe(p) || socketpair(AF_UNIX, SOCK_STREAM, 0, sk))
		die("pipe/socketpair: %s", strerror(errno));
	kid = fork();
	if (kid < 0)
		die("fork: %s", strerror(errno));
	if (kid == 0) {
		close(p[1]);
		close(sk[0]);
		if (tcp >= 0)
			close(tcp);
		child(p[0], sk[1]);
	}
	close(p[0]);
	close(sk[1]);
	for (int i = 0; i < 2; i++)
		if (pthread_create(&th[i], NULL, counter, (void *)&counts[i]))
			die("pthread_create");
	/* Ready once the child has set itself up and both threads run (a new
	 * thread starts with every signal blocked until glibc's start code
	 * unblocks them). */
	if (full(sk[0], &n, sizeof(n), 0) || n != READY)
		die("the child did not say it was ready");
	while (!counts[0] || !counts[1])
		sleep_ms(1);
	victim_ready(argv[1]);
	while (!got_term) {
		char buf[24];

		if (full(p[1], &round, sizeof(round), 1))
			fail("pipe write of %u: %s", round, strerror(errno));
		n = round;
		if (full(sk[0], &n, sizeof(n), 1) || full(sk[0], &n, sizeof(n), 0))
			fail("unix socket round %u: %s", round, strerror(errno));
		else if (n != round + 1)
			fail("unix socket: child answered %u to %u", n, round);
		n = round;
		if (tcp < 0)
			;
		else if (full(tcp, &n, sizeof(n), 1) || full(tcp, &n, sizeof(n), 0))
			fail("tcp round %u: %s", round, errno ? strerror(errno) : "EOF");
		else if (n != round)
			fail("tcp: peer echoed %u for %u", n, round);
		if (tcp >= 0)
			setsockopt(tcp, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
		round++;
		snprintf(buf, sizeof(buf), "%20u\n", round);
		if (pwrite(status_fd, buf, 21, 0) != 21)
			fail("status write: %s", strerror(errno));
		if (victim_failures)
			break;
		sleep_ms(20);
	}
	while (!got_term)
		sleep_ms(10);
	{
		uint64_t c0 = counts[0], c1 = counts[1];

		sleep_ms(100);
		if (counts[0] == c0 || counts[1] == c1)
			fail("a thread stopped counting (%llu, %llu)", (unsigned long long)c0, (unsigned long long)c1);
	}
	n = END;
	if (full(sk[0], &n, sizeof(n), 1))
		fail("unix socket end: %s", strerror(errno));
	close(p[1]);
	while (waitpid(kid, &st, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("child ended with status %#x", st);
	n = END;
	if (tcp >= 0 && (full(tcp, &n, sizeof(n), 1) || full(tcp, &n, sizeof(n), 0) || n != END))
		fail("last tcp round trip: %s", errno ? strerror(errno) : "wrong echo");
	say("%u rounds", round);
	victim_finish();
}
