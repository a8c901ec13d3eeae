/*
 * mqueue: POSIX message queues (see README.md). `mqueue READY PREFIX`
 * (PREFIX like "/stasis-mq-123", unique per run). Setup: queue PREFIX-a
 * (mode 0640, maxmsg 8, msgsize 64) open read-write and non-blocking at
 * fd 20 and write-only at fd 21, holding "m1" priority 1, "m2" 5, "m3" 5,
 * "m4" 9, "m5" 0; queue PREFIX-b (maxmsg 4, msgsize 32), empty, open at
 * fd 22 with a notification registered (SIGEV_SIGNAL, SIGUSR1); queue
 * PREFIX-c with "x" priority 3 and "y" 7, closed (no fd holds it).
 *
 * On SIGTERM: PREFIX-a's attributes (flags of each fd, maxmsg, msgsize,
 * 5 messages), mode, and its messages in order m4 m2 m3 m1 m5; a message
 * sent to PREFIX-b raises SIGUSR1 with si_code SI_MESGQ; PREFIX-c holds y
 * then x. Every queue is unlinked at the end.
 */
#include "victim.h"

#include <mqueue.h>
#include <sys/stat.h>

static char qa[256], qb[256], qc[256];
static volatile sig_atomic_t got_usr1, usr1_code;

static void on_usr1(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)uc;
	got_usr1 = 1;
	usr1_code = si->si_code;
}

static mqd_t open_q(const char *name, int flags, long maxmsg, long msgsize, int target)
{
	struct mq_attr a = { .mq_maxmsg = maxmsg, .mq_msgsize = msgsize };
	mqd_t q = mq_open(name, flags | O_CREAT | O_EXCL, 0640, &a);

	if (q < 0)
		die("mq_open %s: %s", name, strerror(errno));
	move_to(q, target);
	return target;
}

static void send(mqd_t q, const char *m, unsigned prio)
{
	if (mq_send(q, m, strlen(m), prio))
		die("mq_send %s: %s", m, strerror(errno));
}

static void expect(const char *qn, mqd_t q, const char *want, unsigned wprio)
{
	char buf[128];
	unsigned prio;
	ssize_t n = mq_receive(q, buf, sizeof(buf), &prio);

	if (n < 0) {
		fail("%s: receive %s: %s", qn, want, strerror(errno));
		return;
	}
	buf[n] = 0;
	if (strcmp(buf, want) || prio != wprio)
		fail("%s: message %s priority %u, want %s priority %u", qn, buf, prio, want, wprio);
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	struct sigevent sev;
	struct mq_attr a;
	struct stat st;
	mqd_t c;
	int i;

	if (argc < 3)
		die("usage: mqueue READY PREFIX");
	victim_init();
	snprintf(qa, sizeof(qa), "%s-a", argv[2]);
	snprintf(qb, sizeof(qb), "%s-b", argv[2]);
	snprintf(qc, sizeof(qc), "%s-c", argv[2]);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGUSR1, &sa, NULL);
	umask(0);

	open_q(qa, O_RDWR | O_NONBLOCK, 8, 64, 20);
	move_to(mq_open(qa, O_WRONLY), 21);
	send(20, "m1", 1);
	send(21, "m2", 5);
	send(20, "m3", 5);
	send(20, "m4", 9);
	send(21, "m5", 0);
	open_q(qb, O_RDONLY, 4, 32, 22);
	memset(&sev, 0, sizeof(sev));
	sev.sigev_notify = SIGEV_SIGNAL;
	sev.sigev_signo = SIGUSR1;
	if (mq_notify(22, &sev))
		die("mq_notify: %s", strerror(errno));
	c = open_q(qc, O_RDWR, 4, 16, 23);
	send(c, "x", 3);
	send(c, "y", 7);
	mq_close(c);

	victim_ready(argv[1]);
	victim_wait();

	if (mq_getattr(20, &a))
		fail("mq_getattr fd 20: %s", strerror(errno));
	else if (a.mq_flags != O_NONBLOCK || a.mq_maxmsg != 8 || a.mq_msgsize != 64 || a.mq_curmsgs != 5)
		fail("fd 20: flags %#lx maxmsg %ld msgsize %ld curmsgs %ld, want O_NONBLOCK 8 64 5",
		     a.mq_flags, a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs);
	if (mq_getattr(21, &a) || a.mq_flags != 0)
		fail("fd 21: flags %#lx, want 0 (%s)", a.mq_flags, strerror(errno));
	if ((fcntl(21, F_GETFL) & O_ACCMODE) != O_WRONLY)
		fail("fd 21 is not write-only: %#x", fcntl(21, F_GETFL));
	if (fstat(20, &st) || (st.st_mode & 07777) != 0640)
		fail("%s: mode %o, want 640", qa, st.st_mode & 07777);
	expect(qa, 20, "m4", 9);
	expect(qa, 20, "m2", 5);
	expect(qa, 20, "m3", 5);
	expect(qa, 20, "m1", 1);
	expect(qa, 20, "m5", 0);

	c = mq_open(qb, O_WRONLY);
	if (c < 0)
		fail("open %s: %s", qb, strerror(errno));
	else {
		send(c, "ping", 2);
		for (i = 0; i < 200 && !got_usr1; i++)
			sleep_ms(5);
		if (!got_usr1)
			fail("%s: no notification (SIGUSR1) after a message", qb);
		else if (usr1_code != SI_MESGQ)
			fail("%s: SIGUSR1 with si_code %d, want SI_MESGQ", qb, usr1_code);
		mq_close(c);
	}
	c = mq_open(qc, O_RDONLY);
	if (c < 0)
		fail("open %s: %s", qc, strerror(errno));
	else {
		expect(qc, c, "y", 7);
		expect(qc, c, "x", 3);
	}
	mq_unlink(qa);
	mq_unlink(qb);
	mq_unlink(qc);
	victim_finish();
}
