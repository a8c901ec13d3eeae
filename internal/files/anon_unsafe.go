package files

import (
	"unsafe"

	"github.com/stasis-cr/stasis/internal/linux"
)

// setTimerfdTicks sets the expirations a timerfd reports to its next read.
func setTimerfdTicks(fd int, ticks uint64) error {
	return linux.IoctlPtr(fd, "TFD_IOC_SET_TICKS", linux.TfdIocSetTicks, unsafe.Pointer(&ticks))
}
