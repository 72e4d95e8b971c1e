package rtpengine

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strconv"
)

// Bencode (BEP 3), the encoding of rtpengine's ng protocol. Values are
// string ([]byte on the wire), int64, []any and map[string]any; dictionary
// keys are written sorted, as the format requires.

// Encode appends the bencoding of v to b.
func Encode(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		b = strconv.AppendInt(b, int64(len(x)), 10)
		b = append(b, ':')
		return append(b, x...), nil
	case []byte:
		b = strconv.AppendInt(b, int64(len(x)), 10)
		b = append(b, ':')
		return append(b, x...), nil
	case int:
		return Encode(b, int64(x))
	case int64:
		b = append(b, 'i')
		b = strconv.AppendInt(b, x, 10)
		return append(b, 'e'), nil
	case []string:
		b = append(b, 'l')
		for _, s := range x {
			b, _ = Encode(b, s)
		}
		return append(b, 'e'), nil
	case []any:
		b = append(b, 'l')
		for _, e := range x {
			var err error
			if b, err = Encode(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, 'e'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b = append(b, 'd')
		for _, k := range keys {
			b, _ = Encode(b, k)
			var err error
			if b, err = Encode(b, x[k]); err != nil {
				return nil, err
			}
		}
		return append(b, 'e'), nil
	}
	return nil, fmt.Errorf("bencode: cannot encode %T", v)
}

// ErrBencode is a malformed bencoded input.
var ErrBencode = errors.New("bencode: malformed input")

// maxDepth bounds nesting, so a hostile reply cannot exhaust the stack.
const maxDepth = 64

// Decode parses one value that must fill data completely. Strings decode
// as string, integers as int64.
func Decode(data []byte) (any, error) {
	v, rest, err := decode(data, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the value", ErrBencode, len(rest))
	}
	return v, nil
}

func decode(d []byte, depth int) (any, []byte, error) {
	if depth > maxDepth {
		return nil, nil, fmt.Errorf("%w: nested too deep", ErrBencode)
	}
	if len(d) == 0 {
		return nil, nil, fmt.Errorf("%w: unexpected end", ErrBencode)
	}
	switch c := d[0]; {
	case c == 'i':
		end := bytes.IndexByte(d, 'e')
		if end < 2 {
			return nil, nil, fmt.Errorf("%w: bad integer", ErrBencode)
		}
		n, err := strconv.ParseInt(string(d[1:end]), 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: bad integer %q", ErrBencode, d[1:end])
		}
		return n, d[end+1:], nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(d, ':')
		if colon < 1 {
			return nil, nil, fmt.Errorf("%w: bad string length", ErrBencode)
		}
		n, err := strconv.Atoi(string(d[:colon]))
		if err != nil || n < 0 || n > len(d)-colon-1 {
			return nil, nil, fmt.Errorf("%w: bad string length %q", ErrBencode, d[:colon])
		}
		return string(d[colon+1 : colon+1+n]), d[colon+1+n:], nil
	case c == 'l':
		d = d[1:]
		list := []any{}
		for {
			if len(d) == 0 {
				return nil, nil, fmt.Errorf("%w: unterminated list", ErrBencode)
			}
			if d[0] == 'e' {
				return list, d[1:], nil
			}
			v, rest, err := decode(d, depth+1)
			if err != nil {
				return nil, nil, err
			}
			list, d = append(list, v), rest
		}
	case c == 'd':
		d = d[1:]
		dict := map[string]any{}
		for {
			if len(d) == 0 {
				return nil, nil, fmt.Errorf("%w: unterminated dictionary", ErrBencode)
			}
			if d[0] == 'e' {
				return dict, d[1:], nil
			}
			k, rest, err := decode(d, depth+1)
			if err != nil {
				return nil, nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, nil, fmt.Errorf("%w: dictionary key is not a string", ErrBencode)
			}
			v, rest, err := decode(rest, depth+1)
			if err != nil {
				return nil, nil, err
			}
			dict[ks], d = v, rest
		}
	}
	return nil, nil, fmt.Errorf("%w: unexpected %q", ErrBencode, d[0])
}
