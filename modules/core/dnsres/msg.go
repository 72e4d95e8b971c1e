package dnsres

// A minimal DNS message codec (RFC 1035, RFC 2782 SRV, RFC 3403 NAPTR):
// queries with one question, answers read with name compression. The
// module graph has no DNS library with NAPTR support, and the standard
// library's resolver cannot ask for NAPTR.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Record types.
const (
	TypeA     uint16 = 1
	TypeCNAME uint16 = 5
	TypeSOA   uint16 = 6
	TypeAAAA  uint16 = 28
	TypeSRV   uint16 = 33
	TypeNAPTR uint16 = 35
)

// RCodes.
const (
	RcodeOK       = 0
	RcodeNXDomain = 3
)

// RR is one resource record of an answer.
type RR struct {
	Name string
	Type uint16
	TTL  uint32
	IP   net.IP // A, AAAA
	// SRV
	Priority, Weight, Port uint16
	Target                 string
	// NAPTR
	Order, Preference               uint16
	Flags, Service, Regexp, Replace string
	// SOA (authority section of a negative answer): its minimum TTL
	Minimum uint32
}

// Msg is a parsed DNS message.
type Msg struct {
	ID         uint16
	Response   bool
	Truncated  bool
	Rcode      int
	Question   string
	QType      uint16
	Answers    []RR
	Authority  []RR
	Additional []RR
}

var errShort = errors.New("dns: message too short")

// appendName writes name as labels (no compression).
func appendName(b []byte, name string) ([]byte, error) {
	name = strings.TrimSuffix(name, ".")
	if name != "" {
		for _, l := range strings.Split(name, ".") {
			if len(l) == 0 || len(l) > 63 {
				return nil, fmt.Errorf("dns: bad name %q", name)
			}
			b = append(b, byte(len(l)))
			b = append(b, l...)
		}
	}
	return append(b, 0), nil
}

// Query builds a recursive query for name and type.
func Query(id uint16, name string, qtype uint16) ([]byte, error) {
	b := make([]byte, 12, 64)
	binary.BigEndian.PutUint16(b[0:], id)
	b[2] = 0x01 // RD
	binary.BigEndian.PutUint16(b[4:], 1)
	b, err := appendName(b, name)
	if err != nil {
		return nil, err
	}
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, qtype), 1), nil
}

// readName reads a possibly compressed name at off; it returns the name
// and the offset after it in the message (not after the pointer target).
func readName(b []byte, off int) (string, int, error) {
	var labels []string
	end := -1
	for jumps := 0; ; {
		if off >= len(b) {
			return "", 0, errShort
		}
		l := int(b[off])
		switch {
		case l == 0:
			if end < 0 {
				end = off + 1
			}
			return strings.Join(labels, "."), end, nil
		case l&0xc0 == 0xc0:
			if off+1 >= len(b) {
				return "", 0, errShort
			}
			if end < 0 {
				end = off + 2
			}
			jumps++
			if jumps > 32 {
				return "", 0, errors.New("dns: compression loop")
			}
			off = int(binary.BigEndian.Uint16(b[off:]) & 0x3fff)
		case l&0xc0 != 0:
			return "", 0, errors.New("dns: bad label")
		default:
			if off+1+l > len(b) {
				return "", 0, errShort
			}
			labels = append(labels, string(b[off+1:off+1+l]))
			off += 1 + l
		}
	}
}

func readString(b []byte, off int) (string, int, error) {
	if off >= len(b) || off+1+int(b[off]) > len(b) {
		return "", 0, errShort
	}
	l := int(b[off])
	return string(b[off+1 : off+1+l]), off + 1 + l, nil
}

// Parse reads a DNS message.
func Parse(b []byte) (*Msg, error) {
	if len(b) < 12 {
		return nil, errShort
	}
	m := &Msg{ID: binary.BigEndian.Uint16(b), Response: b[2]&0x80 != 0, Truncated: b[2]&0x02 != 0, Rcode: int(b[3] & 0x0f)}
	qd, an, ns, ar := int(binary.BigEndian.Uint16(b[4:])), int(binary.BigEndian.Uint16(b[6:])), int(binary.BigEndian.Uint16(b[8:])), int(binary.BigEndian.Uint16(b[10:]))
	off := 12
	for i := 0; i < qd; i++ {
		name, n, err := readName(b, off)
		if err != nil {
			return nil, err
		}
		if n+4 > len(b) {
			return nil, errShort
		}
		if i == 0 {
			m.Question, m.QType = name, binary.BigEndian.Uint16(b[n:])
		}
		off = n + 4
	}
	var err error
	for _, sec := range []struct {
		n   int
		dst *[]RR
	}{{an, &m.Answers}, {ns, &m.Authority}, {ar, &m.Additional}} {
		for i := 0; i < sec.n; i++ {
			var rr RR
			if rr, off, err = readRR(b, off); err != nil {
				return nil, err
			}
			*sec.dst = append(*sec.dst, rr)
		}
	}
	return m, nil
}

func readRR(b []byte, off int) (RR, int, error) {
	var rr RR
	name, off, err := readName(b, off)
	if err != nil {
		return rr, 0, err
	}
	if off+10 > len(b) {
		return rr, 0, errShort
	}
	rr.Name = name
	rr.Type = binary.BigEndian.Uint16(b[off:])
	rr.TTL = binary.BigEndian.Uint32(b[off+4:])
	rdlen := int(binary.BigEndian.Uint16(b[off+8:]))
	off += 10
	if off+rdlen > len(b) {
		return rr, 0, errShort
	}
	rd := b[off : off+rdlen]
	switch rr.Type {
	case TypeA:
		if rdlen != 4 {
			return rr, 0, errors.New("dns: bad A record")
		}
		rr.IP = net.IP(append([]byte(nil), rd...))
	case TypeAAAA:
		if rdlen != 16 {
			return rr, 0, errors.New("dns: bad AAAA record")
		}
		rr.IP = net.IP(append([]byte(nil), rd...))
	case TypeCNAME:
		if rr.Target, _, err = readName(b, off); err != nil {
			return rr, 0, err
		}
	case TypeSRV:
		if rdlen < 7 {
			return rr, 0, errors.New("dns: bad SRV record")
		}
		rr.Priority, rr.Weight, rr.Port = binary.BigEndian.Uint16(rd), binary.BigEndian.Uint16(rd[2:]), binary.BigEndian.Uint16(rd[4:])
		if rr.Target, _, err = readName(b, off+6); err != nil {
			return rr, 0, err
		}
	case TypeNAPTR:
		if rdlen < 7 {
			return rr, 0, errors.New("dns: bad NAPTR record")
		}
		rr.Order, rr.Preference = binary.BigEndian.Uint16(rd), binary.BigEndian.Uint16(rd[2:])
		p := off + 4
		if rr.Flags, p, err = readString(b, p); err != nil {
			return rr, 0, err
		}
		if rr.Service, p, err = readString(b, p); err != nil {
			return rr, 0, err
		}
		if rr.Regexp, p, err = readString(b, p); err != nil {
			return rr, 0, err
		}
		if rr.Replace, _, err = readName(b, p); err != nil {
			return rr, 0, err
		}
	case TypeSOA:
		_, p, err := readName(b, off)
		if err != nil {
			return rr, 0, err
		}
		if _, p, err = readName(b, p); err != nil {
			return rr, 0, err
		}
		if p+20 > off+rdlen {
			return rr, 0, errors.New("dns: bad SOA record")
		}
		rr.Minimum = binary.BigEndian.Uint32(b[p+16:])
	}
	return rr, off + rdlen, nil
}

// Builder writes DNS answers (for test servers): Reply(query) then Add*.
type Builder struct {
	b     []byte
	count int
}

// Reply starts the answer to q with rcode.
func Reply(q []byte, rcode int) (*Builder, error) {
	m, err := Parse(q)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 12, 512)
	binary.BigEndian.PutUint16(b, m.ID)
	b[2] = 0x81 // QR, RD
	b[3] = 0x80 | byte(rcode)
	binary.BigEndian.PutUint16(b[4:], 1)
	if b, err = appendName(b, m.Question); err != nil {
		return nil, err
	}
	b = binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(b, m.QType), 1)
	return &Builder{b: b}, nil
}

func (w *Builder) add(name string, typ uint16, ttl uint32, rdata []byte) {
	w.b, _ = appendName(w.b, name)
	w.b = binary.BigEndian.AppendUint16(w.b, typ)
	w.b = binary.BigEndian.AppendUint16(w.b, 1)
	w.b = binary.BigEndian.AppendUint32(w.b, ttl)
	w.b = binary.BigEndian.AppendUint16(w.b, uint16(len(rdata)))
	w.b = append(w.b, rdata...)
	w.count++
}

// A adds an A or AAAA record.
func (w *Builder) A(name string, ttl uint32, ip net.IP) {
	if v4 := ip.To4(); v4 != nil {
		w.add(name, TypeA, ttl, v4)
		return
	}
	w.add(name, TypeAAAA, ttl, ip.To16())
}

// SRV adds an SRV record.
func (w *Builder) SRV(name string, ttl uint32, prio, weight, port uint16, target string) {
	rd := binary.BigEndian.AppendUint16(nil, prio)
	rd = binary.BigEndian.AppendUint16(rd, weight)
	rd = binary.BigEndian.AppendUint16(rd, port)
	rd, _ = appendName(rd, target)
	w.add(name, TypeSRV, ttl, rd)
}

// NAPTR adds a NAPTR record.
func (w *Builder) NAPTR(name string, ttl uint32, order, pref uint16, flags, service, regexp, replacement string) {
	rd := binary.BigEndian.AppendUint16(nil, order)
	rd = binary.BigEndian.AppendUint16(rd, pref)
	for _, s := range []string{flags, service, regexp} {
		rd = append(rd, byte(len(s)))
		rd = append(rd, s...)
	}
	rd, _ = appendName(rd, replacement)
	w.add(name, TypeNAPTR, ttl, rd)
}

// Bytes returns the message with its answer count.
func (w *Builder) Bytes() []byte {
	binary.BigEndian.PutUint16(w.b[6:], uint16(w.count))
	return w.b
}
