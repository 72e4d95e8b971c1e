package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime/debug"
	"unicode/utf8"
)

// maxBatch bounds the number of calls in one batch.
const maxBatch = 1000

type response struct {
	JSONRPC string          `json:"jsonrpc"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *Error          `json:"error,omitempty"`
	ID      json.RawMessage `json:"id"`
}

var nullID = json.RawMessage("null")

func errResponse(id json.RawMessage, e *Error) *response {
	if len(id) == 0 {
		id = nullID
	}
	return &response{JSONRPC: "2.0", Error: e, ID: id}
}

// request is one parsed request object; err is set for an invalid one.
type request struct {
	id     json.RawMessage
	hasID  bool
	method string
	params json.RawMessage
	err    *Error
}

// handle decodes and executes one JSON-RPC message (a single request or a
// batch) and returns the encoded reply, or nil when nothing must be sent back
// (a notification, or a batch of notifications). The caller releases the
// reply once written. code is the error code of a single failed request (0
// otherwise), used to choose the HTTP status.
//
// The reply is built whole in a bounded buffer (never sent partially): a
// result over MaxResponseBytes is replaced by a 507 error; once a batch's
// replies pass MaxBatchBytes, or the memory budget is used up, the call that
// crossed the bound and every later one get an error instead (the later ones
// are not executed).
func (s *Server) handle(ctx context.Context, role Role, data []byte) (out *replyBuf, code int) {
	data = bytes.TrimSpace(data)
	// Invalid UTF-8 is a parse error: its bytes must never be echoed (in an id).
	if len(data) == 0 || !utf8.Valid(data) || !json.Valid(data) {
		return s.errorReply(stdError(CodeParseError)), CodeParseError
	}
	if data[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(data, &items); err != nil {
			return s.errorReply(stdError(CodeParseError)), CodeParseError
		}
		if len(items) == 0 {
			return s.errorReply(stdError(CodeInvalidRequest)), CodeInvalidRequest
		}
		if len(items) > maxBatch {
			e := stdError(CodeInvalidRequest)
			e.Message = fmt.Sprintf("Invalid Request: batch larger than %d calls", maxBatch)
			return s.errorReply(e), CodeInvalidRequest
		}
		buf := s.newReply()
		n := 0
		var stopped *Error
		for _, it := range items {
			req := parseRequest(it)
			if req.err == nil && !req.hasID {
				if stopped == nil {
					s.work(ctx, func() { s.wireInvoke(ctx, role, req.method, req.params) }) // notification: never answered
				}
				continue
			}
			buf.forced(func() {
				if n == 0 {
					buf.WriteByte('[')
				} else {
					buf.WriteByte(',')
				}
			})
			n++
			switch {
			case req.err != nil:
				s.writeError(buf, req.id, req.err)
			case stopped != nil:
				s.writeError(buf, req.id, stopped)
			default:
				ran := s.work(ctx, func() {
					v, rerr := s.wireInvoke(ctx, role, req.method, req.params)
					if stop := s.writeResponse(buf, req.id, v, rerr); stop != nil {
						stopped = s.notExecuted(stop)
					}
				})
				if !ran { // the caller went away while waiting
					stopped = NewError(CodeBusy, "Not executed: the connection closed")
					s.writeError(buf, req.id, stopped)
				}
			}
		}
		if n == 0 {
			buf.release()
			return nil, 0
		}
		buf.forced(func() { buf.WriteByte(']') })
		return buf, 0
	}
	req := parseRequest(data)
	if req.err != nil {
		return s.errorReply(req.err, req.id), req.err.Code
	}
	var buf *replyBuf
	ran := s.work(ctx, func() {
		v, rerr := s.wireInvoke(ctx, role, req.method, req.params)
		if req.hasID { // else a notification: never answered
			buf = s.newReply()
			s.writeResponse(buf, req.id, v, rerr)
		}
	})
	if !ran {
		return s.errorReply(NewError(CodeBusy, "Not executed: the connection closed"), req.id), CodeBusy
	}
	if buf == nil {
		return nil, 0
	}
	return buf, buf.code
}

// work runs one call (the handler and the encoding of its result) holding
// one of the MaxRunning slots, so RPC work never takes every CPU from SIP.
// It reports false, without running f, when ctx ended while waiting.
func (s *Server) work(ctx context.Context, f func()) bool {
	select {
	case s.running <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-s.running }()
	f()
	return true
}

func (s *Server) newReply() *replyBuf {
	return newReplyBuf(s.budget, s.cfg.MaxResponseBytes, s.cfg.MaxBatchBytes)
}

// errorReply is a reply holding one error response (id null unless given).
func (s *Server) errorReply(e *Error, id ...json.RawMessage) *replyBuf {
	buf := s.newReply()
	var rid json.RawMessage
	if len(id) > 0 {
		rid = id[0]
	}
	s.writeError(buf, rid, e)
	return buf
}

// writeError writes an error response; it always fits (small, forced).
func (s *Server) writeError(buf *replyBuf, id json.RawMessage, e *Error) {
	buf.forced(func() { buf.Write(s.encode(errResponse(id, e))) })
	buf.code = e.Code
}

// writeResponse writes the response to one request: the result, or the
// error. A result over a bound is replaced by an error; the returned error
// is errBatchTooLarge or errBusy when later calls must not run.
func (s *Server) writeResponse(buf *replyBuf, id json.RawMessage, v any, rerr *Error) (stop error) {
	if rerr != nil {
		s.writeError(buf, id, rerr)
		return nil
	}
	if len(id) == 0 {
		id = nullID
	}
	mark := buf.Len()
	buf.setMark()
	buf.WriteString(`{"jsonrpc":"2.0","result":`)
	err := writeResult(buf, v)
	if err == nil {
		buf.WriteString(`,"id":`)
		buf.Write(id)
		buf.WriteByte('}')
	}
	if buf.err != nil {
		err = buf.err // a bound, whatever the writer made of it
	}
	if err == nil {
		buf.code = 0
		return nil
	}
	buf.truncate(mark)
	var e *Error
	switch {
	case errors.Is(err, errRespTooLarge):
		e = Errorf(CodeTooLarge, "Response too large: over %d bytes (rpc_max_response_bytes); page the dump (limit and cursor) or ask for less", s.cfg.MaxResponseBytes)
	case errors.Is(err, errBatchTooLarge):
		e = Errorf(CodeTooLarge, "Response too large: the batch's replies exceed %d bytes (rpc_max_batch_bytes); send fewer calls per batch", s.cfg.MaxBatchBytes)
		stop = err
	case errors.Is(err, errBusy):
		e = s.busyError()
		stop = err
	default:
		s.log.Error("rpc: cannot encode result", "err", err)
		e = stdError(CodeInternalError)
	}
	s.writeError(buf, id, e)
	return stop
}

func (s *Server) busyError() *Error {
	return Errorf(CodeBusy, "Server busy: the RPC memory budget (%d bytes, rpc_memory_budget) is in use; retry later", s.cfg.MemoryBudget)
}

// notExecuted is the error of the calls after a batch hit a bound.
func (s *Server) notExecuted(stop error) *Error {
	if errors.Is(stop, errBusy) {
		return Errorf(CodeBusy, "Not executed: server busy, the RPC memory budget (%d bytes, rpc_memory_budget) is in use; retry later", s.cfg.MemoryBudget)
	}
	return Errorf(CodeTooLarge, "Not executed: the batch's replies exceeded %d bytes (rpc_max_batch_bytes); send fewer calls per batch", s.cfg.MaxBatchBytes)
}

// encode marshals a response; an error payload that cannot be marshalled is
// replaced by a plain internal error.
func (s *Server) encode(r *response) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		s.log.Error("rpc: cannot encode response", "err", err)
		b, _ = json.Marshal(errResponse(r.ID, stdError(CodeInternalError)))
	}
	return b
}

// parseRequest checks one request object.
func parseRequest(raw json.RawMessage) request {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return request{err: stdError(CodeInvalidRequest)}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return request{err: stdError(CodeInvalidRequest)}
	}
	var req request
	req.id, req.hasID = obj["id"]
	if req.hasID {
		req.id = bytes.TrimSpace(req.id)
	}
	invalid := func(why string) request {
		e := stdError(CodeInvalidRequest)
		e.Message += ": " + why
		req.err = e
		return req
	}
	if v, ok := obj["jsonrpc"]; !ok || string(bytes.TrimSpace(v)) != `"2.0"` {
		return invalid(`"jsonrpc" must be "2.0"`)
	}
	if v, ok := obj["method"]; !ok || jsonKind(v) != "string" || json.Unmarshal(v, &req.method) != nil {
		return invalid(`"method" must be a string`)
	}
	req.params = obj["params"]
	if len(req.params) > 0 {
		switch jsonKind(req.params) {
		case "array", "object", "null":
		default:
			return invalid(`"params" must be an array or an object`)
		}
	}
	return req
}

// invoke looks the method up, checks the role and params, and runs the
// handler; it returns the handler's result, encoded later by writeResult.
func (s *Server) invoke(ctx context.Context, role Role, name string, raw json.RawMessage) (res any, rerr *Error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("rpc: handler panic", "method", name, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			res, rerr = nil, stdError(CodeInternalError)
		}
	}()
	m := s.reg.lookup(name)
	if m == nil {
		return nil, stdError(CodeMethodNotFound)
	}
	if role != RoleAdmin && !m.ReadOnly {
		return nil, stdError(CodeForbidden)
	}
	p, perr := bindParams(m, raw)
	if perr != nil {
		if m.ParamError != nil {
			e := *m.ParamError // a copy: the method's value is shared
			return nil, &e
		}
		return nil, perr
	}
	ctx = context.WithValue(ctx, roleKey, role)
	v, err := m.Handler(ctx, p)
	if err != nil {
		return nil, toError(err)
	}
	return v, nil
}

// StreamResult is a result that encodes itself, piece by piece, straight
// into the bounded reply buffer (a large dump never exists whole as Go
// values). It must write one JSON object or array and stop at the first
// write error. Modules implement it without importing rpc.
type StreamResult interface {
	WriteJSON(w io.Writer) error
}

// writeResult encodes a handler result into w.
func writeResult(w io.Writer, v any) error {
	if sr, ok := v.(StreamResult); ok && v != nil {
		if rv := reflect.ValueOf(v); !(rv.Kind() == reflect.Pointer && rv.IsNil()) {
			return sr.WriteJSON(w)
		}
	}
	b, err := marshalResult(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// marshalResult encodes a handler result, which must be an object or array.
// nil (and a nil map or pointer) becomes {}, a nil slice becomes [].
func marshalResult(v any) (json.RawMessage, error) {
	if v == nil {
		return json.RawMessage("{}"), nil
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		return json.RawMessage("[]"), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	switch jsonKind(b) {
	case "object", "array":
		return b, nil
	case "null":
		return json.RawMessage("{}"), nil
	}
	return nil, fmt.Errorf("result must be a JSON object or array, got %s", jsonKind(b))
}

// wireInvoke is invoke for a request that came over the wire, told to
// Config.Observe (metrics); in-process Call is not counted.
func (s *Server) wireInvoke(ctx context.Context, role Role, name string, raw json.RawMessage) (any, *Error) {
	res, rerr := s.invoke(ctx, role, name, raw)
	if s.cfg.Observe != nil {
		code := 0
		if rerr != nil {
			code = rerr.Code
		}
		s.cfg.Observe(name, code)
	}
	return res, rerr
}
