package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

var (
	intRe   = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)
	floatRe = regexp.MustCompile(`^-?(0|[1-9][0-9]*)\.[0-9]+$`)
)

// parseParam types one command-line argument the way kamcmd does: a
// numeric-looking argument is a number, anything else a string. Prefixes
// force a type: s: string, i: int, b: bool, j: raw JSON (arrays, objects).
// Numbers with a leading zero or a sign "+" (phone numbers) stay strings.
func parseParam(arg string) (any, error) {
	switch {
	case strings.HasPrefix(arg, "s:"):
		return arg[2:], nil
	case strings.HasPrefix(arg, "i:"):
		v := strings.TrimSpace(arg[2:])
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return nil, fmt.Errorf("%q: not an integer", arg)
		}
		return json.Number(strings.TrimPrefix(v, "+")), nil
	case strings.HasPrefix(arg, "b:"):
		switch strings.ToLower(arg[2:]) {
		case "1", "true", "yes", "on":
			return true, nil
		case "0", "false", "no", "off":
			return false, nil
		}
		return nil, fmt.Errorf("%q: not a boolean (true/false, yes/no, 1/0)", arg)
	case strings.HasPrefix(arg, "j:"):
		if !json.Valid([]byte(arg[2:])) {
			return nil, fmt.Errorf("%q: invalid JSON", arg)
		}
		return json.RawMessage(arg[2:]), nil
	case intRe.MatchString(arg), floatRe.MatchString(arg):
		return json.Number(arg), nil
	}
	return arg, nil
}

func parseParams(args []string) ([]any, error) {
	out := make([]any, 0, len(args))
	for _, a := range args {
		v, err := parseParam(a)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// value is a JSON value that keeps the order of object members.
type value struct {
	kind byte // 'o' object, 'a' array, 's' string, 'n' number, 'b' bool, 'z' null
	keys []string
	vals []*value
	text string
}

func decodeOrdered(raw []byte) (*value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (*value, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			v := &value{kind: 'o'}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				sub, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				v.keys = append(v.keys, k)
				v.vals = append(v.vals, sub)
			}
			_, err := dec.Token()
			return v, err
		case '[':
			v := &value{kind: 'a'}
			for dec.More() {
				sub, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				v.vals = append(v.vals, sub)
			}
			_, err := dec.Token()
			return v, err
		}
	case string:
		return &value{kind: 's', text: t}, nil
	case json.Number:
		return &value{kind: 'n', text: t.String()}, nil
	case bool:
		return &value{kind: 'b', text: strconv.FormatBool(t)}, nil
	case nil:
		return &value{kind: 'z', text: "<null string>"}, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

// printReadable prints a result in kamcmd's style: an object is "{", one
// "<tabs>name: value" line per member, "}"; an array prints its elements one
// after the other; nested objects and arrays are indented one tab deeper.
// An empty top-level result ({} or []) prints nothing.
func printReadable(w io.Writer, raw []byte) error {
	v, err := decodeOrdered(raw)
	if err != nil {
		return err
	}
	switch v.kind {
	case 'a':
		for _, e := range v.vals {
			printElem(w, e, 0)
		}
	case 'o':
		if len(v.keys) > 0 {
			printElem(w, v, 0)
		}
	default:
		printElem(w, v, 0)
	}
	return nil
}

func tabs(n int) string { return strings.Repeat("\t", n) }

func printElem(w io.Writer, v *value, depth int) {
	switch v.kind {
	case 'o':
		fmt.Fprintf(w, "%s{\n", tabs(depth))
		printMembers(w, v, depth+1)
		fmt.Fprintf(w, "%s}\n", tabs(depth))
	case 'a':
		fmt.Fprintf(w, "%s[\n", tabs(depth))
		for _, e := range v.vals {
			printElem(w, e, depth+1)
		}
		fmt.Fprintf(w, "%s]\n", tabs(depth))
	default:
		fmt.Fprintf(w, "%s%s\n", tabs(depth), v.text)
	}
}

func printMembers(w io.Writer, v *value, depth int) {
	for i, k := range v.keys {
		m := v.vals[i]
		switch {
		case m.kind == 'o' && len(m.keys) == 0:
			fmt.Fprintf(w, "%s%s: {}\n", tabs(depth), k)
		case m.kind == 'o':
			fmt.Fprintf(w, "%s%s: {\n", tabs(depth), k)
			printMembers(w, m, depth+1)
			fmt.Fprintf(w, "%s}\n", tabs(depth))
		case m.kind == 'a' && len(m.vals) == 0:
			fmt.Fprintf(w, "%s%s: []\n", tabs(depth), k)
		case m.kind == 'a':
			fmt.Fprintf(w, "%s%s: [\n", tabs(depth), k)
			for _, e := range m.vals {
				printElem(w, e, depth+1)
			}
			fmt.Fprintf(w, "%s]\n", tabs(depth))
		default:
			fmt.Fprintf(w, "%s%s: %s\n", tabs(depth), k, m.text)
		}
	}
}

// printJSON prints raw JSON indented by two spaces.
func printJSON(w io.Writer, raw []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return err
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// splitWords splits a shell line into words, honouring '...' and "..." quotes
// and backslash escapes.
func splitWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	esc := false
	for _, r := range line {
		switch {
		case esc:
			cur.WriteRune(r)
			esc = false
		case r == '\\' && quote != '\'':
			esc, inWord = true, true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
