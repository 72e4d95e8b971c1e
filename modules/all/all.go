// Package all links every module into a binary: import it for its side effects.
package all

import (
	_ "github.com/kamgo/kamgo/modules/acc"
	_ "github.com/kamgo/kamgo/modules/auth"
	_ "github.com/kamgo/kamgo/modules/auth_db"
	_ "github.com/kamgo/kamgo/modules/dialog"
	_ "github.com/kamgo/kamgo/modules/htable"
	_ "github.com/kamgo/kamgo/modules/ims_ipsec_pcscf"
	_ "github.com/kamgo/kamgo/modules/kx"
	_ "github.com/kamgo/kamgo/modules/maxfwd"
	_ "github.com/kamgo/kamgo/modules/pvx"
	_ "github.com/kamgo/kamgo/modules/registrar"
	_ "github.com/kamgo/kamgo/modules/rr"
	_ "github.com/kamgo/kamgo/modules/sanity"
	_ "github.com/kamgo/kamgo/modules/siputils"
	_ "github.com/kamgo/kamgo/modules/sl"
	_ "github.com/kamgo/kamgo/modules/textops"
	_ "github.com/kamgo/kamgo/modules/tm"
	_ "github.com/kamgo/kamgo/modules/tmx"
	_ "github.com/kamgo/kamgo/modules/uac"
	_ "github.com/kamgo/kamgo/modules/usrloc"
	_ "github.com/kamgo/kamgo/modules/xlog"
)
