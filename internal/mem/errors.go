package mem

import "fmt"

// ErrUnsupportedVMA is wrapped by errors about mappings stasis cannot
// checkpoint yet.
var ErrUnsupportedVMA = fmt.Errorf("mapping not supported")

// ErrTruncatedPages is wrapped when a pages image is shorter than its
// pagemap says.
var ErrTruncatedPages = fmt.Errorf("pages image truncated")
