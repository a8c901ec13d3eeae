/*
 * signals: handlers, the blocked mask and pending signals survive a dump.
 *
 *   signals READY SENDER_PID
 *
 * Set up before READY:
 * - SIGUSR1: handler with SA_SIGINFO|SA_RESTART and sa_mask {SIGHUP, SIGWINCH};
 * - SIGUSR2: SA_SIGINFO handler, blocked;
 * - SIGRTMIN+3: default action, blocked, two instances queued to itself with
 *   sigqueue(), si_value 0x1234 then 0x5678;
 * - SIGPIPE ignored.
 *
 * The harness then sends SIGUSR2 (it stays pending: blocked) before the dump
 * and SIGUSR1 after the restore. On SIGTERM the victim checks the mask, every
 * disposition with sigaction(), that SIGUSR1's handler ran with its sa_mask
 * applied, that both RT instances are still queued with their values (in
 * order), and finally unblocks SIGUSR2, whose handler must run at once with
 * si_pid = SENDER_PID.
 */
#include "victim.h"

#define RTSIG (SIGRTMIN + 3)

static volatile sig_atomic_t usr1_count, usr1_mask_bad, usr2_count;
static volatile pid_t usr2_from;
static volatile int usr2_code;

static void on_usr1(int sig, siginfo_t *si, void *uc_)
{
	ucontext_t *uc = uc_;
	sigset_t cur;

	(void)sig;
	(void)si;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	/* Inside the handler: sa_mask and the signal itself are added. */
	if (!sigismember(&cur, SIGHUP) || !sigismember(&cur, SIGWINCH) || !sigismember(&cur, SIGUSR1))
		usr1_mask_bad |= 1;
	/* The interrupted context's mask is the task's normal one. */
	if (!sigismember(&uc->uc_sigmask, SIGUSR2) || !sigismember(&uc->uc_sigmask, RTSIG) ||
	    sigismember(&uc->uc_sigmask, SIGHUP))
		usr1_mask_bad |= 2;
	usr1_count++;
}

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	usr2_from = si->si_pid;
	usr2_code = si->si_code;
	usr2_count++;
}

static void check_action(int sig, const char *name, void *want_handler, int want_flags, const int *want_mask)
{
	struct sigaction old;

	if (sigaction(sig, NULL, &old)) {
		fail("sigaction(%s): %s", name, strerror(errno));
		return;
	}
	void *h = (old.sa_flags & SA_SIGINFO) ? (void *)old.sa_sigaction : (void *)old.sa_handler;
	if (h != want_handler)
		fail("%s handler is %p, want %p", name, h, want_handler);
	int interesting = SA_SIGINFO | SA_RESTART | SA_NODEFER | SA_RESETHAND | SA_ONSTACK;
	if ((old.sa_flags & interesting) != want_flags)
		fail("%s sa_flags are %#x, want %#x (of %#x)", name, old.sa_flags & interesting, want_flags, interesting);
	for (int s = 1; s <= SIGRTMAX; s++) {
		int want = 0;

		for (const int *m = want_mask; m && *m; m++)
			want |= *m == s;
		if (sigismember(&old.sa_mask, s) != want)
			fail("%s sa_mask: signal %d is %s, want %s", name, s,
			     want ? "missing" : "present", want ? "present" : "absent");
	}
}

static void check_set(const char *what, const sigset_t *set, const int *want_sigs)
{
	for (int s = 1; s <= SIGRTMAX; s++) {
		int want = 0;

		for (const int *m = want_sigs; *m; m++)
			want |= *m == s;
		if (sigismember(set, s) != want)
			fail("%s: signal %d is %s", what, s, want ? "missing" : "unexpectedly present");
	}
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	sigset_t set;
	pid_t sender;

	if (argc < 3)
		die("usage: signals READY SENDER_PID");
	sender = atoi(argv[2]);
	victim_init();

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr1;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGHUP);
	sigaddset(&sa.sa_mask, SIGWINCH);
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction(SIGUSR1): %s", strerror(errno));

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_usr2;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGUSR2, &sa, NULL))
		die("sigaction(SIGUSR2): %s", strerror(errno));

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	if (sigaction(SIGPIPE, &sa, NULL))
		die("sigaction(SIGPIPE): %s", strerror(errno));

	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, RTSIG);
	if (sigprocmask(SIG_BLOCK, &set, NULL))
		die("sigprocmask: %s", strerror(errno));
	if (sigqueue(getpid(), RTSIG, (union sigval){ .sival_int = 0x1234 }) ||
	    sigqueue(getpid(), RTSIG, (union sigval){ .sival_int = 0x5678 }))
		die("sigqueue: %s", strerror(errno));

	victim_ready(argv[1]);
	victim_wait();

	/* The normal mask: exactly what was blocked at setup. */
	sigset_t cur;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	check_set("blocked mask", &cur, (int[]){ SIGUSR2, RTSIG, 0 });

	check_action(SIGUSR1, "SIGUSR1", (void *)on_usr1, SA_SIGINFO | SA_RESTART, (int[]){ SIGHUP, SIGWINCH, 0 });
	check_action(SIGUSR2, "SIGUSR2", (void *)on_usr2, SA_SIGINFO, NULL);
	check_action(SIGPIPE, "SIGPIPE", (void *)SIG_IGN, 0, NULL);
	check_action(RTSIG, "SIGRTMIN+3", (void *)SIG_DFL, 0, NULL);
	check_action(SIGTERM, "SIGTERM", (void *)on_term, 0, NULL);
	check_action(SIGHUP, "SIGHUP", (void *)SIG_DFL, 0, NULL);

	if (usr1_count < 1)
		fail("SIGUSR1 handler never ran (count %d)", (int)usr1_count);
	if (usr1_mask_bad & 1)
		fail("SIGUSR1 handler ran without its sa_mask {SIGHUP, SIGWINCH} applied");
	if (usr1_mask_bad & 2)
		fail("SIGUSR1 handler's interrupted mask (uc_sigmask) is not the normal one");

	sigset_t pend;
	sigpending(&pend);
	if (!sigismember(&pend, SIGUSR2))
		fail("SIGUSR2 is not pending any more");
	if (!sigismember(&pend, RTSIG))
		fail("SIGRTMIN+3 is not pending any more");

	/* Both RT instances, in queue order, with their payload. */
	const int want_val[2] = { 0x1234, 0x5678 };
	for (int i = 0; i < 3; i++) {
		sigset_t rt;
		siginfo_t si;
		struct timespec zero = { 0, 0 };

		sigemptyset(&rt);
		sigaddset(&rt, RTSIG);
		int s = sigtimedwait(&rt, &si, &zero);
		if (i == 2) {
			if (s >= 0)
				fail("a third SIGRTMIN+3 instance was queued (si_value %#x)", si.si_value.sival_int);
			break;
		}
		if (s < 0) {
			fail("SIGRTMIN+3 instance %d is lost: %s", i, strerror(errno));
			break;
		}
		if (si.si_value.sival_int != want_val[i])
			fail("SIGRTMIN+3 instance %d has si_value %#x, want %#x", i, si.si_value.sival_int, want_val[i]);
		if (si.si_code != SI_QUEUE)
			fail("SIGRTMIN+3 instance %d has si_code %d, want SI_QUEUE (%d)", i, si.si_code, SI_QUEUE);
		if (si.si_pid != victim_pid)
			fail("SIGRTMIN+3 instance %d has si_pid %d, want %d", i, si.si_pid, victim_pid);
	}

	if (usr2_count)
		fail("SIGUSR2 handler ran while SIGUSR2 was blocked");
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_UNBLOCK, &set, NULL); /* delivers the pending SIGUSR2 now */
	if (usr2_count != 1)
		fail("SIGUSR2 handler ran %d times after unblocking, want 1", (int)usr2_count);
	else {
		if (usr2_code != SI_USER)
			fail("SIGUSR2 si_code %d, want SI_USER (%d)", usr2_code, SI_USER);
		if (usr2_from != sender)
			fail("SIGUSR2 si_pid %d, want the sender %d", (int)usr2_from, sender);
	}
	say("signals: SIGUSR1 handled %d times", (int)usr1_count);
	victim_finish();
}
