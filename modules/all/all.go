// Package all links every module into a binary: import it for its side effects.
package all

import (
	_ "github.com/kamgo/kamgo/modules/sl"
	_ "github.com/kamgo/kamgo/modules/tm"
)
