package core

import "errors"

// ErrFinalReplied is returned when a transaction already sent its final
// reply; reply functions map it to -1, as Kamailio does.
var ErrFinalReplied = errors.New("a final reply was already sent")

// TxReplier is implemented by a transaction bound to a message (m.Tx), so
// Msg.Reply and sl.send_reply can answer statefully when a transaction exists.
type TxReplier interface {
	Reply(m *Msg, code int, reason string) error
}
