// Package testutil holds the helpers of the end-to-end tests (test/e2e): it
// builds the stasis binary and the C victims of test/victims, starts victims,
// runs `stasis dump` and `stasis restore` the way a user does, and reads /proc.
//
// A Victim is one logical process across its incarnations: the original one
// started by StartVictim, then each one that a restore brings back with the
// same PID. Wait, Reap and TermAndCheck always act on the current one, so a
// test reads as the scenario it checks:
//
//	v := testutil.StartVictim(t, "counter", status)
//	v.WaitReady(t)
//	testutil.Dump(t, v.Pid, dir) // kills it
//	v.Reap(t)                    // frees the PID (a zombie would hold it)
//	testutil.RestoreDetached(t, dir, v)
//	v.TermAndCheck(t)            // SIGTERM: the victim checks itself, exit 0
//
// Every process a helper starts is killed, by PID only, when the test ends.
//
// Thread rules: helpers must be called from the test's goroutine (they call
// t.Fatal). Exit statuses are collected by one goroutine per incarnation.
// BuildStasis and RemoveBuilds are for TestMain.
package testutil
