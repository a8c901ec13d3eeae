package mem

import "github.com/stasis-cr/stasis/internal/bufpool"

// winBufSize is the size of the window buffers kept between copies: the
// dump's and the restore's windows (copyWindowSize, fillWindowSize).
const winBufSize = 1 << 20

// winBufs keeps the window buffers of eachWindow between runs: a tree's
// dump copies the pages of each process in turn, two at a time, each
// with its workers.
var winBufs = bufpool.New(winBufSize, 2*max(copyWorkers, fillWorkers))
