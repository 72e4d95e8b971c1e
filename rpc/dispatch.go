package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"runtime/debug"
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

// handle decodes and executes one JSON-RPC message (a single request or a batch)
// and returns the encoded response, or nil when nothing must be sent back (a
// notification, or a batch of notifications). code is the error code of a single
// failed request (0 otherwise), used to choose the HTTP status.
func (s *Server) handle(ctx context.Context, role Role, data []byte) (out []byte, code int) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || !json.Valid(data) {
		return s.encode(errResponse(nil, stdError(CodeParseError))), CodeParseError
	}
	if data[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(data, &items); err != nil {
			return s.encode(errResponse(nil, stdError(CodeParseError))), CodeParseError
		}
		if len(items) == 0 {
			return s.encode(errResponse(nil, stdError(CodeInvalidRequest))), CodeInvalidRequest
		}
		if len(items) > maxBatch {
			e := stdError(CodeInvalidRequest)
			e.Message = fmt.Sprintf("Invalid Request: batch larger than %d calls", maxBatch)
			return s.encode(errResponse(nil, e)), CodeInvalidRequest
		}
		var buf bytes.Buffer
		n := 0
		for _, it := range items {
			r := s.call(ctx, role, it)
			if r == nil {
				continue
			}
			if n == 0 {
				buf.WriteByte('[')
			} else {
				buf.WriteByte(',')
			}
			buf.Write(s.encode(r))
			n++
		}
		if n == 0 {
			return nil, 0
		}
		buf.WriteByte(']')
		return buf.Bytes(), 0
	}
	r := s.call(ctx, role, data)
	if r == nil {
		return nil, 0
	}
	if r.Error != nil {
		code = r.Error.Code
	}
	return s.encode(r), code
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

// call executes one request object. It returns nil for a notification.
func (s *Server) call(ctx context.Context, role Role, raw json.RawMessage) *response {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return errResponse(nil, stdError(CodeInvalidRequest))
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return errResponse(nil, stdError(CodeInvalidRequest))
	}
	id, hasID := obj["id"]
	if hasID {
		id = bytes.TrimSpace(id)
	}
	invalid := func(why string) *response {
		e := stdError(CodeInvalidRequest)
		e.Message += ": " + why
		return errResponse(id, e)
	}
	if v, ok := obj["jsonrpc"]; !ok || string(bytes.TrimSpace(v)) != `"2.0"` {
		return invalid(`"jsonrpc" must be "2.0"`)
	}
	var method string
	if v, ok := obj["method"]; !ok || jsonKind(v) != "string" || json.Unmarshal(v, &method) != nil {
		return invalid(`"method" must be a string`)
	}
	params := obj["params"]
	if len(params) > 0 {
		switch jsonKind(params) {
		case "array", "object", "null":
		default:
			return invalid(`"params" must be an array or an object`)
		}
	}
	result, rerr := s.invoke(ctx, role, method, params)
	if s.cfg.Observe != nil { // wire requests only: in-process Call is not counted
		code := 0
		if rerr != nil {
			code = rerr.Code
		}
		s.cfg.Observe(method, code)
	}
	if !hasID {
		return nil // notification: never answered
	}
	if rerr != nil {
		return errResponse(id, rerr)
	}
	return &response{JSONRPC: "2.0", Result: result, ID: id}
}

// invoke looks the method up, checks the role and params, and runs the handler.
func (s *Server) invoke(ctx context.Context, role Role, name string, raw json.RawMessage) (res json.RawMessage, rerr *Error) {
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
	b, err := marshalResult(v)
	if err != nil {
		s.log.Error("rpc: bad handler result", "method", name, "err", err)
		e := stdError(CodeInternalError)
		return nil, e
	}
	return b, nil
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
