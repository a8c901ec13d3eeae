package checksum

import "github.com/stasis-cr/stasis/internal/bufpool"

// blockBufs keeps the read buffers of sumFileBlocks between files (a
// restore sums every image, a tree's pages image of a MiB or two per
// process): PagesBlock, the biggest block a manifest of stasis names; as
// many as the files summed at once times the goroutines of one file, on
// two CPUs.
var blockBufs = bufpool.New(PagesBlock, 4)
