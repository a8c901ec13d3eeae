package images

import (
	"testing"

	criucore "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestWarmFillsEveryLevel: the warm-up reaches the types deep under
// CoreEntry (a thread's registers), and runs without panicking.
func TestWarmFillsEveryLevel(t *testing.T) {
	c := &criucore.CoreEntry{}
	fill(c.ProtoReflect(), map[protoreflect.FullName]bool{})
	if c.GetThreadInfo().GetFpregs().GetXsave() == nil || c.GetTc() == nil {
		t.Fatalf("fill left types out: %v", c)
	}
	warm()
}
