package ims_ipsec_pcscf

import (
	"encoding/hex"
	"strings"
	"testing"
)

const samsung = `ipsec-3gpp;prot=esp;mod=trans;spi-c=54900;spi-s=54901;port-c=6902;port-s=6900;alg=hmac-md5-96;ealg=des-ede3-cbc, ipsec-3gpp;prot=esp;mod=trans;spi-c=54900;spi-s=54901;port-c=6902;port-s=6900;alg=hmac-md5-96;ealg=aes-cbc, ipsec-3gpp;prot=esp;mod=trans;spi-c=54900;spi-s=54901;port-c=6902;port-s=6900;alg=hmac-sha-1-96;ealg=null`

func TestParseSecurity(t *testing.T) {
	tests := []struct {
		name   string
		in     []string
		n      int
		check  func(t *testing.T, ms []Mechanism)
		errHas string
	}{
		{name: "samsung three offers", in: []string{samsung}, n: 3, check: func(t *testing.T, ms []Mechanism) {
			if ms[0].Ealg != "des-ede3-cbc" || ms[2].Alg != "hmac-sha-1-96" || ms[2].PortC != 6902 || ms[2].PortS != 6900 || ms[1].SpiS != 54901 {
				t.Errorf("%+v", ms)
			}
		}},
		{name: "missing ealg is null, prot/mod default", in: []string{"ipsec-3gpp;alg=hmac-sha-1-96;spi-c=1111;spi-s=2222;port-c=31000;port-s=31001"}, n: 1,
			check: func(t *testing.T, ms []Mechanism) {
				if ms[0].Ealg != "null" || ms[0].Prot != "esp" || ms[0].Mod != "trans" || !ms[0].Supported() {
					t.Errorf("%+v", ms[0])
				}
			}},
		{name: "spaces around ; and =, q, 10-digit SPI, unknown param kept", in: []string{`ipsec-3gpp ; q = 0.5 ; alg = hmac-md5-96 ; spi-c=4294967295; spi-s=256; port-c=1; port-s=65535; foo=bar; flag`}, n: 1,
			check: func(t *testing.T, ms []Mechanism) {
				m := ms[0]
				if m.Q != 500 || m.SpiC != 4294967295 || m.PortS != 65535 || len(m.Ext) != 2 || m.Ext[0] != (Param{"foo", "bar"}) || m.Ext[1].Name != "flag" {
					t.Errorf("%+v", m)
				}
			}},
		{name: "several header lines", in: []string{"ipsec-3gpp;alg=hmac-md5-96;spi-c=1;spi-s=2;port-c=3;port-s=4", "digest;d-alg=md5;d-ver=\"0123456789abcdef0123456789abcdef\";q=1", "tls;q=0.2"}, n: 3,
			check: func(t *testing.T, ms []Mechanism) {
				if ms[1].Name != "digest" || ms[1].Q != 1000 || ms[2].Q != 200 || ms[1].Ext[1].Value != `"0123456789abcdef0123456789abcdef"` {
					t.Errorf("%+v", ms)
				}
			}},
		{name: "quoted comma inside a param does not split", in: []string{`digest;d-ver="a,b";q=0.1, tls`}, n: 2},
		{name: "empty list element tolerated", in: []string{"tls, , digest"}, n: 2},
		{name: "SPI 0", in: []string{"ipsec-3gpp;alg=hmac-md5-96;spi-c=0;spi-s=2;port-c=3;port-s=4"}, errHas: "SPI 0"},
		{name: "port 0", in: []string{"ipsec-3gpp;alg=hmac-md5-96;spi-c=1;spi-s=2;port-c=0;port-s=4"}, errHas: "port-c"},
		{name: "SPI over 32 bits", in: []string{"ipsec-3gpp;alg=hmac-md5-96;spi-c=4294967296;spi-s=2;port-c=3;port-s=4"}, errHas: "out of range"},
		{name: "SPI 11 digits", in: []string{"ipsec-3gpp;alg=hmac-md5-96;spi-c=00000000001;spi-s=2;port-c=3;port-s=4"}, errHas: "bad SPI"},
		{name: "port too big", in: []string{"ipsec-3gpp;alg=hmac-md5-96;spi-c=1;spi-s=2;port-c=65536;port-s=4"}, errHas: "out of range"},
		{name: "negative port", in: []string{"ipsec-3gpp;alg=hmac-md5-96;spi-c=1;spi-s=2;port-c=-3;port-s=4"}, errHas: "bad port"},
		{name: "missing spi-s", in: []string{"ipsec-3gpp;alg=hmac-md5-96;spi-c=1;port-c=3;port-s=4"}, errHas: "spi-s missing"},
		{name: "missing alg", in: []string{"ipsec-3gpp;spi-c=1;spi-s=2;port-c=3;port-s=4"}, errHas: "alg missing"},
		{name: "duplicate param", in: []string{"ipsec-3gpp;alg=hmac-md5-96;alg=hmac-sha-1-96;spi-c=1;spi-s=2;port-c=3;port-s=4"}, errHas: "twice"},
		{name: "bad q", in: []string{"tls;q=1.5"}, errHas: "qvalue"},
		{name: "bad q 4 digits", in: []string{"tls;q=0.1234"}, errHas: "qvalue"},
		{name: "empty", in: []string{""}, errHas: "no mechanism"},
		{name: "unterminated quote", in: []string{`digest;d-ver="abc`}, errHas: "unterminated"},
		{name: "bad name", in: []string{"ipsec 3gpp;alg=x"}, errHas: "mechanism name"},
		{name: "empty value", in: []string{"tls;q="}, errHas: "empty value"},
		{name: "q without value", in: []string{"tls;q"}, errHas: "without a value"},
		{name: "control char in value", in: []string{"tls;x=a\x00b"}, errHas: "bad value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ms, err := ParseSecurity(tc.in...)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err %v, want it to mention %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(ms) != tc.n {
				t.Fatalf("%d mechanisms, want %d: %+v", len(ms), tc.n, ms)
			}
			if tc.check != nil {
				tc.check(t, ms)
			}
			// What is printed parses back to the same mechanisms.
			again, err := ParseSecurity(FormatSecurity(ms))
			if err != nil {
				t.Fatalf("reparse %q: %v", FormatSecurity(ms), err)
			}
			if FormatSecurity(again) != FormatSecurity(ms) {
				t.Errorf("round trip\n%s\n%s", FormatSecurity(ms), FormatSecurity(again))
			}
		})
	}
}

func TestFormatSecurityServerKamailioOrder(t *testing.T) {
	m := Mechanism{Name: "ipsec-3gpp", Q: 100, Prot: "esp", Mod: "trans", SpiC: 4096, SpiS: 4097, PortC: 5100, PortS: 6100, Alg: "hmac-sha-1-96", Ealg: "null"}
	want := "ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5100;port-s=6100;alg=hmac-sha-1-96;ealg=null"
	if got := m.String(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	for q, s := range map[int]string{0: "0", 1000: "1", 50: "0.05", 123: "0.123"} {
		if formatQ(q) != s {
			t.Errorf("formatQ(%d) = %s", q, formatQ(q))
		}
	}
}

func TestChoose(t *testing.T) {
	offers, err := ParseSecurity(samsung + ", ipsec-3gpp;alg=aes-gmac;ealg=aes-gcm;spi-c=1;spi-s=2;port-c=3;port-s=4")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ alg, ealg, wantAlg, wantEalg string }{
		{"", "", "hmac-md5-96", "des-ede3-cbc"},
		{"hmac-sha-1-96", "", "hmac-sha-1-96", "null"},
		{"", "aes-cbc", "hmac-md5-96", "aes-cbc"},
		{"hmac-sha-1-96", "aes-cbc", "hmac-md5-96", "des-ede3-cbc"}, // no match: first supported
	} {
		m, err := Choose(offers, tc.alg, tc.ealg)
		if err != nil || m.Alg != tc.wantAlg || m.Ealg != tc.wantEalg {
			t.Errorf("Choose(%q,%q) = %s/%s %v", tc.alg, tc.ealg, m.Alg, m.Ealg, err)
		}
	}
	only, _ := ParseSecurity("ipsec-3gpp;alg=aes-gmac;ealg=aes-gcm;spi-c=1;spi-s=2;port-c=3;port-s=4, tls")
	if _, err := Choose(only, "", ""); err == nil {
		t.Error("no supported offer: want an error")
	}
}

func TestSameSA(t *testing.T) {
	a, _ := ParseSecurity("ipsec-3gpp;q=0.1;prot=esp;mod=trans;spi-c=4096;spi-s=4097;port-c=5100;port-s=6100;alg=hmac-sha-1-96;ealg=null")
	b, _ := ParseSecurity("ipsec-3gpp; alg=hmac-sha-1-96; spi-s=4097; spi-c=4096; port-s=6100; port-c=5100; q=0.1")
	c, _ := ParseSecurity("ipsec-3gpp;alg=hmac-sha-1-96;spi-c=4096;spi-s=4098;port-c=5100;port-s=6100")
	if !a[0].SameSA(&b[0]) {
		t.Error("same SA in another order and with defaults: want equal")
	}
	if a[0].SameSA(&c[0]) {
		t.Error("different spi-s: want not equal")
	}
}

const ckHex, ikHex = "b40ba9a3c58b2a05bbf0d987b21bf8cb", "f769bcd751044604127672711c6d3441"

func TestStripCKIK(t *testing.T) {
	base := `realm="ims.mnc001.mcc001.3gppnetwork.org", nonce="abc"`
	tests := []struct {
		name, in, want, errHas string
	}{
		{name: "end", in: `Digest ` + base + `, algorithm=AKAv1-MD5, ck="` + ckHex + `", ik="` + ikHex + `"`,
			want: `Digest ` + base + `, algorithm=AKAv1-MD5`},
		{name: "start, upper case names", in: `Digest CK="` + ckHex + `", IK="` + ikHex + `", ` + base,
			want: `Digest ` + base},
		{name: "middle, ik first, qop after", in: `Digest ` + base + `, ik="` + ikHex + `",ck="` + ckHex + `" , qop="auth,auth-int"`,
			want: `Digest ` + base + `, qop="auth,auth-int"`},
		{name: "nonce holding ck= is kept", in: `Digest nonce="x, ck=\"1\", ik=2", ck="` + ckHex + `", ik="` + ikHex + `"`,
			want: `Digest nonce="x, ck=\"1\", ik=2"`},
		{name: "ik missing", in: `Digest ` + base + `, ck="` + ckHex + `"`, errHas: "missing"},
		{name: "none", in: `Digest ` + base, errHas: "missing"},
		{name: "short key", in: `Digest ck="abcd", ik="` + ikHex + `"`, errHas: "32 hex"},
		{name: "not hex", in: `Digest ck="` + strings.Repeat("z", 32) + `", ik="` + ikHex + `"`, errHas: "not hex"},
		{name: "twice", in: `Digest ck="` + ckHex + `", ck="` + ckHex + `", ik="` + ikHex + `"`, errHas: "twice"},
		{name: "unterminated", in: `Digest nonce="abc, ck=x`, errHas: "unterminated"},
		{name: "garbage param", in: `Digest nonce`, errHas: "bad auth-param"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rest, ck, ik, err := StripCKIK(tc.in)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("err %v, want %q", err, tc.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rest != tc.want {
				t.Errorf("got  %s\nwant %s", rest, tc.want)
			}
			if hex.EncodeToString(ck) != ckHex || hex.EncodeToString(ik) != ikHex {
				t.Errorf("ck %x ik %x", ck, ik)
			}
		})
	}
}

func FuzzParseSecurity(f *testing.F) {
	for _, s := range []string{samsung, "tls;q=0.5", `digest;d-ver="a,b"`, "ipsec-3gpp;alg=hmac-md5-96;spi-c=1;spi-s=2;port-c=3;port-s=4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := ParseSecurity(s)
		if err != nil {
			return
		}
		// Whatever parses must print to something that parses the same.
		out := FormatSecurity(ms)
		again, err := ParseSecurity(out)
		if err != nil {
			t.Fatalf("%q parsed, printed %q does not: %v", s, out, err)
		}
		if FormatSecurity(again) != out {
			t.Fatalf("not stable: %q -> %q", out, FormatSecurity(again))
		}
	})
}

func FuzzStripCKIK(f *testing.F) {
	f.Add(`Digest nonce="x", ck="` + ckHex + `", ik="` + ikHex + `"`)
	f.Fuzz(func(t *testing.T, s string) {
		rest, _, _, err := StripCKIK(s)
		if err != nil {
			return
		}
		if _, _, _, err := StripCKIK(rest + `, ck="` + ckHex + `", ik="` + ikHex + `"`); err != nil {
			t.Fatalf("stripped %q is not re-parsable: %v", rest, err)
		}
	})
}
