/*
 * pipe: unnamed pipes in every state a program leaves them in.
 *
 *   pipe READY
 *
 * - big: capacity raised to 256 KiB, 150000 patterned bytes buffered
 *   (more than the default 64 KiB capacity), read end O_NONBLOCK at fd 50,
 *   write end at fd 51, and a dup of the read end at fd 52 sharing its
 *   open file description.
 * - stream: a child writes "seq N\n" lines into a pipe every 2 ms, the
 *   victim reads them one by one and checks they never skip or repeat:
 *   bytes in flight at dump time must be neither lost nor doubled.
 * - reopened: a pipe whose read end was opened a second time through
 *   /proc/self/fd (a second open file description, O_NONBLOCK) at fd 55;
 *   "via-1" is written through the first write end and read from fd 55.
 * - eof: a pipe whose write end is closed: its read end (fd 56) reads
 *   "last words" then end of file.
 * - broken: a pipe whose read end is closed: a write to fd 57 fails
 *   with EPIPE (SIGPIPE is ignored).
 * - async: read end at fd 64 with O_ASYNC, owned by the victim (F_SETOWN)
 *   with signal SIGRTMIN+1 (F_SETSIG); a byte written to fd 65 at check
 *   time must bring that signal with si_fd 64.
 *
 * On SIGTERM the victim checks all of it from the inside, tells the child
 * to stop (closing its read side of a control pipe), and reaps it.
 */
#include "victim.h"
#include <sys/ioctl.h>
#include <sys/wait.h>

#define BIG_CAP (256 * 1024)
#define BIG_LEN 150000

static unsigned char big_byte(size_t i) { return (unsigned char)(i * 7 + i / 251); }

static void mkpipe(int p[2], int rfd, int wfd)
{
	int q[2];

	if (pipe(q))
		die("pipe: %s", strerror(errno));
	/* Move out of the way first: the targets may be q's numbers. */
	int r = fcntl(q[0], F_DUPFD, 200), w = fcntl(q[1], F_DUPFD, 200);
	close(q[0]);
	close(q[1]);
	move_to(r, rfd);
	move_to(w, wfd);
	p[0] = rfd;
	p[1] = wfd;
}

static volatile sig_atomic_t async_sigs, async_fd = -1;

static void on_async(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	async_sigs++;
	async_fd = si->si_fd;
}

static void check_flags(int fd, int want, const char *what)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		fail("%s (fd %d): F_GETFL: %s", what, fd, strerror(errno));
	else if ((fl & (O_ACCMODE | O_NONBLOCK)) != want)
		fail("%s (fd %d): flags %#o, want %#o", what, fd, fl & (O_ACCMODE | O_NONBLOCK), want);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: pipe READY");
	victim_init();
	signal(SIGPIPE, SIG_IGN);

	int big[2], stream[2], ctl[2], reo[2], eof[2], broken[2], async[2];

	/* big */
	mkpipe(big, 50, 51);
	if (fcntl(big[1], F_SETPIPE_SZ, BIG_CAP) != BIG_CAP)
		die("F_SETPIPE_SZ %d: %s", BIG_CAP, strerror(errno));
	static unsigned char buf[BIG_LEN];
	for (size_t i = 0; i < BIG_LEN; i++)
		buf[i] = big_byte(i);
	/* Many small writes: the buffer spans many pipe_buffers. */
	for (size_t off = 0; off < BIG_LEN;) {
		size_t n = off < 4000 ? 100 : BIG_LEN - off;
		if (write(big[1], buf + off, n) != (ssize_t)n)
			die("fill big pipe: %s", strerror(errno));
		off += n;
	}
	fcntl(big[0], F_SETFL, O_NONBLOCK);
	if (dup2(big[0], 52) != 52)
		die("dup2: %s", strerror(errno));

	/* stream: the child writes, we read */
	mkpipe(stream, 53, 54);
	mkpipe(ctl, 60, 61);
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		close(stream[0]);
		close(ctl[1]);
		fcntl(ctl[0], F_SETFL, O_NONBLOCK);
		char line[32];
		for (unsigned long seq = 0;; seq++) {
			char c;
			if (read(ctl[0], &c, 1) == 0)
				_exit(0); /* the parent closed the control pipe */
			int n = snprintf(line, sizeof(line), "seq %lu\n", seq);
			if (write(stream[1], line, n) != n)
				_exit(3);
			sleep_ms(2);
		}
	}
	close(stream[1]);
	close(ctl[0]);

	/* reopened */
	mkpipe(reo, 58, 59);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", reo[0]);
	int r2 = open(path, O_RDONLY | O_NONBLOCK);
	if (r2 < 0)
		die("reopen %s: %s", path, strerror(errno));
	move_to(r2, 55);

	/* eof */
	mkpipe(eof, 56, 62);
	if (write(eof[1], "last words", 10) != 10)
		die("write: %s", strerror(errno));
	close(eof[1]);

	/* broken */
	mkpipe(broken, 63, 57);
	close(broken[0]);

	/* async */
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_async;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGRTMIN + 1, &sa, NULL))
		die("sigaction: %s", strerror(errno));
	mkpipe(async, 64, 65);
	if (fcntl(64, F_SETOWN, getpid()) || fcntl(64, F_SETSIG, SIGRTMIN + 1) ||
	    fcntl(64, F_SETFL, O_NONBLOCK | O_ASYNC))
		die("O_ASYNC on fd 64: %s", strerror(errno));

	victim_ready(argv[1]);

	unsigned long want = 0;
	char acc[64];
	size_t have = 0;
	while (!got_term) {
		ssize_t n = read(stream[0], acc + have, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fail("stream pipe: read returned %zd (%s) before SIGTERM", n, n < 0 ? strerror(errno) : "EOF");
			break;
		}
		if (acc[have] != '\n') {
			if (++have >= sizeof(acc) - 1) {
				fail("stream pipe: line too long");
				break;
			}
			continue;
		}
		acc[have] = 0;
		unsigned long got;
		if (sscanf(acc, "seq %lu", &got) != 1 || got != want) {
			fail("stream pipe: got line \"%s\", want seq %lu", acc, want);
			break;
		}
		want++;
		have = 0;
	}
	if (want < 3)
		fail("stream pipe: only %lu lines read", want);

	/* big: capacity, flags, shared description, content */
	int cap = fcntl(big[0], F_GETPIPE_SZ);
	if (cap != BIG_CAP)
		fail("big pipe: capacity %d, want %d", cap, BIG_CAP);
	check_flags(big[0], O_RDONLY | O_NONBLOCK, "big pipe read end");
	check_flags(52, O_RDONLY | O_NONBLOCK, "dup of the big pipe read end");
	check_flags(big[1], O_WRONLY, "big pipe write end");
	int avail = 0;
	ioctl(big[0], FIONREAD, &avail);
	if (avail != BIG_LEN)
		fail("big pipe: %d bytes buffered, want %d", avail, BIG_LEN);
	static unsigned char got[BIG_LEN + 1];
	size_t total = 0;
	for (int fd = 52;; fd = fd == 52 ? big[0] : 52) { /* both fds drain one description */
		ssize_t n = read(fd, got + total, 1000);
		if (n <= 0)
			break;
		total += n;
	}
	if (total != BIG_LEN)
		fail("big pipe: read %zu bytes, want %d", total, BIG_LEN);
	else
		for (size_t i = 0; i < BIG_LEN; i++)
			if (got[i] != big_byte(i)) {
				fail("big pipe: byte %zu is %#x, want %#x", i, got[i], big_byte(i));
				break;
			}

	/* async: owner, signal and O_ASYNC kept; the signal names fd 64 */
	if (fcntl(64, F_GETOWN) != getpid() || fcntl(64, F_GETSIG) != SIGRTMIN + 1 || !(fcntl(64, F_GETFL) & O_ASYNC))
		fail("async pipe: owner %d, signal %d, flags %#o, want %d, %d and O_ASYNC",
		     fcntl(64, F_GETOWN), fcntl(64, F_GETSIG), fcntl(64, F_GETFL), getpid(), SIGRTMIN + 1);
	async_sigs = 0;
	if (write(65, "!", 1) != 1)
		fail("async pipe: write: %s", strerror(errno));
	for (int i = 0; i < 100 && !async_sigs; i++)
		sleep_ms(10);
	if (async_sigs != 1 || async_fd != 64)
		fail("async pipe: %d signal(s), si_fd %d, want 1 with si_fd 64", (int)async_sigs, (int)async_fd);

	/* reopened: a second description of the same pipe */
	check_flags(55, O_RDONLY | O_NONBLOCK, "reopened read end");
	check_flags(reo[0], O_RDONLY, "first read end");
	if (write(reo[1], "via-1", 5) != 5)
		fail("reopened pipe: write: %s", strerror(errno));
	char small[16] = "";
	if (read(55, small, sizeof(small)) != 5 || memcmp(small, "via-1", 5))
		fail("reopened pipe: fd 55 read \"%s\", want via-1 (not the same pipe?)", small);

	/* eof */
	char lw[32] = "";
	if (read(eof[0], lw, sizeof(lw)) != 10 || memcmp(lw, "last words", 10))
		fail("eof pipe: read \"%s\", want \"last words\"", lw);
	else if (read(eof[0], lw, sizeof(lw)) != 0)
		fail("eof pipe: no end of file after the data: a writer is still open");

	/* broken */
	errno = 0;
	if (write(broken[1], "x", 1) != -1 || errno != EPIPE)
		fail("broken pipe: write gave errno %d, want EPIPE: a reader is open", errno);

	close(ctl[1]);
	int st;
	if (waitpid(child, &st, 0) != child)
		fail("waitpid child: %s", strerror(errno));
	else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("child: status %#x", st);
	victim_finish();
}
