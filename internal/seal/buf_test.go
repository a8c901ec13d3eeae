package seal

import (
	"bufio"
	"net"
)

func newBuf(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, 1<<20) }
