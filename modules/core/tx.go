package core

// TxReplier is implemented by a transaction bound to a message (m.Tx), so
// sl.send_reply can answer statefully when a transaction exists.
type TxReplier interface {
	Reply(m *Msg, code int, reason string) error
}
