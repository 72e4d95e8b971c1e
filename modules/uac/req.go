package uac

import "github.com/kamgo/kamgo/modules/core"

// reqFuncs are the script functions of uac's request side (uac_req_send,
// uac_replace_from/to, uac_auth); uac-tm fills them in.
func (u *UAC) reqFuncs() []core.Func { return nil }

// reqPVs are the request side's pseudo-variables ($uac_req); uac-tm fills them in.
func (u *UAC) reqPVs() []core.PVDef { return nil }
