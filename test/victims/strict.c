/*
 * strict: a process in seccomp strict mode (SECCOMP_MODE_STRICT), where only
 * read, write, _exit and rt_sigreturn are allowed.
 *
 *   strict READY
 *
 * It creates READY, enters strict mode and spins (it may not even sleep).
 * The harness sees "Seccomp: 1" in /proc/PID/status.
 *   SIGTERM: it writes "PASS" and calls _exit(0) (the exit syscall, not
 *            exit_group, which strict mode forbids).
 *   SIGUSR1: it calls getpid(), which strict mode answers with SIGKILL: the
 *            harness expects death by SIGKILL. If the call returns, strict
 *            mode is gone: "FAIL: ..." and exit status 1.
 */
#include "victim.h"
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static volatile sig_atomic_t got_usr1;

static void on_usr1(int sig)
{
	(void)sig;
	got_usr1 = 1;
}

static void put(const char *s)
{
	if (write(2, s, strlen(s)) < 0) { /* nothing better to do */ }
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: strict READY");
	victim_init();
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction: %s", strerror(errno));
	say("strict: pid %d enters seccomp strict mode", getpid());
	victim_ready(argv[1]);
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0))
		die("PR_SET_SECCOMP strict: %s", strerror(errno));

	while (!got_term && !got_usr1)
		__asm__ volatile("pause");
	if (got_usr1) {
		syscall(SYS_getpid); /* strict mode kills us here */
		put("FAIL: getpid() returned in seccomp strict mode: strict mode lost\n");
		syscall(SYS_exit, 1);
	}
	put("PASS\n");
	syscall(SYS_exit, 0);
	return 0;
}
