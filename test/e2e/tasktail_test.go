package e2e

import "testing"

// TestTaskTail: stopped and traced tasks, fs info, signal handlers and fd
// tables shared by processes that are not threads (tasktail.c).
func TestTaskTail(t *testing.T) {
	runTail(t, "tasktail", []tailCase{
		{scenario: "stopped"},
		{scenario: "stopped-mt"},
		{scenario: "stopped-unwaited"},
		// criu 4.2 refuses it ("Can't make FS id").
		{scenario: "share-fs"},
		// criu 4.2 refuses these too ("Unseizable non-zombie", "Can't
		// make VM/FILES id"); stasis names the tasks and the object.
		{scenario: "traced", refused: "is traced by pid"},
		{scenario: "traced-run", refused: "is traced by pid"},
		{scenario: "share-sighand", refused: "shares its memory with pid"},
		{scenario: "share-files-sib", refused: "shares its fd table with pid"},
		{scenario: "share-files-gc"},
	})
}
