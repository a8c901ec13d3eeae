package mem

import (
	"fmt"

	"github.com/stasis-cr/stasis/internal/linux"
)

// ErrUnsupportedVMA is wrapped by errors about mappings stasis cannot
// checkpoint yet. It wraps linux.ErrNotSupported, stasis' one "not
// supported".
var ErrUnsupportedVMA = fmt.Errorf("mapping %w", linux.ErrNotSupported)

// ErrTruncatedPages is wrapped when a pages image is shorter than its
// pagemap says.
var ErrTruncatedPages = fmt.Errorf("pages image truncated")
