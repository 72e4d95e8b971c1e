package rpc

import (
	"errors"
	"fmt"
)

// JSON-RPC 2.0 standard error codes.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
)

// Application error codes. Like Kamailio's jsonrpcs, kamgo uses HTTP-like codes for
// failures reported by a method: 400 bad input, 404 record not found, 500 failure.
// Auth failures use 401 (no or wrong token) and 403 (role may not call the method).
const (
	CodeBadRequest   = 400
	CodeUnauthorized = 401
	CodeForbidden    = 403
	CodeNotFound     = 404
	CodeConflict     = 409
	CodeServerError  = 500
)

// Error is a JSON-RPC error object. Handlers return it (possibly wrapped) to choose the
// code and message sent to the client; any other error becomes code 500 with the error
// text as message. Client.Call returns *Error for error responses.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

// Error formats the error the way kamcmd prints faults: "CODE - MESSAGE".
func (e *Error) Error() string { return fmt.Sprintf("%d - %s", e.Code, e.Message) }

// NewError returns an *Error with the given code and message.
func NewError(code int, message string) *Error { return &Error{Code: code, Message: message} }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrNotFound is Kamailio's usual 404 "Record not found".
func ErrNotFound() *Error { return NewError(CodeNotFound, "Record not found") }

// BadRequestf returns a 400 error (Kamailio's code for bad input, e.g. "Invalid parameters").
func BadRequestf(format string, args ...any) *Error { return Errorf(CodeBadRequest, format, args...) }

// ServerErrorf returns a 500 error.
func ServerErrorf(format string, args ...any) *Error { return Errorf(CodeServerError, format, args...) }

// InvalidParamsf returns a -32602 error whose message starts with "Invalid params: ".
func InvalidParamsf(format string, args ...any) *Error {
	return &Error{Code: CodeInvalidParams, Message: "Invalid params: " + fmt.Sprintf(format, args...)}
}

// toError converts a handler error into an *Error.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) && e != nil {
		return e
	}
	return &Error{Code: CodeServerError, Message: err.Error()}
}

func stdError(code int) *Error {
	switch code {
	case CodeParseError:
		return NewError(code, "Parse error")
	case CodeInvalidRequest:
		return NewError(code, "Invalid Request")
	case CodeMethodNotFound:
		return NewError(code, "Method not found")
	case CodeInvalidParams:
		return NewError(code, "Invalid params")
	case CodeUnauthorized:
		return NewError(code, "Unauthorized")
	case CodeForbidden:
		return NewError(code, "Forbidden")
	default:
		return NewError(CodeInternalError, "Internal error")
	}
}
