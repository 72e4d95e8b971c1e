package core

import (
	"errors"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestCheckParam(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		ok          bool
	}{
		{"tag", "a8f3-x.Y_z!%*+`'~", true},
		{"lr", "", true},
		{"received", "192.0.2.10", true},
		{"received", "2001:db8::1", true},
		{"received", "[2001:db8::1]", true},
		{"received", "fe80::1%lo", true},
		{"+sip.instance", `"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"`, true},
		{"x", `"a \"b\" c"`, true},
		{"tag", "a>,<sip:evil@203.0.113.9", false},
		{"tag", `"x>,<sip:evil@203.0.113.9`, false},
		{"x", "\"\nX-Injected: yes\"", false},
		{"x", "\nX-Injected: yes", false},
		{"x", "a\x00b", false},
		{"x", "a b", false},
		{"x", `"a"b"`, false},
		{"x", `"a\"`, false},
		{"x", "a;b", false},
		{"x", "[not-ip]", false},
		{"", "v", false},
		{"a b", "v", false},
	} {
		err := CheckParam(tc.name, tc.value)
		if (err == nil) != tc.ok {
			t.Errorf("CheckParam(%q, %q) = %v, want ok %v", tc.name, tc.value, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadValue) {
			t.Errorf("CheckParam(%q, %q): error %v is not ErrBadValue", tc.name, tc.value, err)
		}
	}
}

func TestCheckURIParam(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		ok          bool
	}{
		{"ftag", "a8f3-x.Y_z", true},
		{"lr", "", true},
		{"x", "a%20b", true},
		{"x", "[::1]:5060/a&b+c$", true},
		{"ftag", "a>,<sip:evil@203.0.113.9", false},
		{"ftag", `"x"`, false},
		{"x", "a%2", false},
		{"x", "a%zz", false},
		{"x", "a b", false},
		{"x", "a;b", false},
		{"x", "a?b", false},
		{"x", "a\r\nb", false},
		{"", "v", false},
	} {
		if err := CheckURIParam(tc.name, tc.value); (err == nil) != tc.ok {
			t.Errorf("CheckURIParam(%q, %q) = %v, want ok %v", tc.name, tc.value, err, tc.ok)
		}
	}
}

func TestQuoteString(t *testing.T) {
	for in, want := range map[string]string{
		"":                    `""`,
		"sip:192.0.2.10:5060": `"sip:192.0.2.10:5060"`,
		`a "b" \c`:            `"a \"b\" \\c"`,
		"\nX-Injected: yes":   "",
		"a\rb":                "",
		"a\x00b":              "",
		"tab\tkept":           "\"tab\tkept\"",
	} {
		got, err := QuoteString(in)
		if want == "" {
			if err == nil {
				t.Errorf("QuoteString(%q) = %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("QuoteString(%q) = %q, %v; want %q", in, got, err, want)
		}
		if !IsQuotedString(got) {
			t.Errorf("QuoteString(%q) = %q is not a quoted string", in, got)
		}
	}
}

// What SetParam writes survives sipgo's serialisation and re-parses to
// one header with the same value.
func TestSetParamRoundTrip(t *testing.T) {
	for _, v := range []string{"z9hG4bK-1", "", "2001:db8::1", `"a b"`, `"<urn:uuid:1>"`} {
		to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "example.com"}, Params: sip.NewParams()}
		if err := SetParam(&to.Params, "p", v); err != nil {
			t.Fatalf("SetParam(%q): %v", v, err)
		}
		text := "To: " + to.Value()
		hs, err := ParseHeaderText(text)
		if err != nil || len(hs) != 1 {
			t.Fatalf("%s: re-parse %v, %d headers", text, err, len(hs))
		}
		if strings.Count(text, `"`) > 2 {
			t.Errorf("%s: quoted twice", text)
		}
	}
	p := sip.NewParams()
	if err := SetParam(&p, "tag", "a>,<sip:evil@203.0.113.9"); err == nil || len(p) != 0 {
		t.Fatalf("bad value written: %v %v", err, p)
	}
	u := sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: 5060, UriParams: sip.NewParams()}
	if err := SetURIParam(&u.UriParams, "ftag", EscapeURIParam("a`b")); err != nil || u.String() != "sip:127.0.0.1:5060;ftag=a%60b" {
		t.Fatalf("SetURIParam: %s %v", u.String(), err)
	}
	if err := SetURIParam(&u.UriParams, "ftag", "a>,<sip:evil@203.0.113.9"); err == nil {
		t.Fatal("SetURIParam wrote an injection")
	}
	var b strings.Builder
	if err := AppendParam(&b, "expires", "60"); err != nil || b.String() != ";expires=60" {
		t.Fatalf("AppendParam: %q %v", b.String(), err)
	}
	if err := AppendParam(&b, "x", "\nX-Injected: yes"); err == nil || b.String() != ";expires=60" {
		t.Fatalf("AppendParam wrote %q (%v)", b.String(), err)
	}
}

func TestEscapeURIParam(t *testing.T) {
	for in, want := range map[string]string{
		"a8f3-x.Y_z":       "a8f3-x.Y_z",
		"_token~1'+`*%!-.": "_token~1'+%60*%25!-.",
		"a>,<sip:evil@x":   "a%3E%2C%3Csip:evil%40x",
		"\r\n":             "%0D%0A",
	} {
		got := EscapeURIParam(in)
		if got != want || !IsURIParamValue(got) {
			t.Errorf("EscapeURIParam(%q) = %q, want %q", in, got, want)
		}
		if IsToken(in) && !IsToken(got) {
			t.Errorf("EscapeURIParam(%q) = %q: a token became a non-token", in, got)
		}
	}
}

// CheckParsedParam: a value holding whitespace is the inside of a quoted
// string once sipgo parsed it (NormalizeParams), checked as quoted.
func TestCheckParsedParam(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"x y", true},
		{`"x y"`, true},
		{`a \"b\" c`, true},
		{"tok", true},
		{`a "b c`, false},
		{"a \nb", false},
		{`x y\`, false},
	} {
		if err := CheckParsedParam("p", tc.value); (err == nil) != tc.ok {
			t.Errorf("CheckParsedParam(p, %q) = %v, want ok %v", tc.value, err, tc.ok)
		}
	}
}
