// Package sippmsg holds the messages sipp's built-in uac scenario and
// tests/bench/sipp/register.xml send, for benchmarks of every stage (it
// imports nothing, so even package core's own tests can use it).
package sippmsg

// Invite is sipp's uac INVITE (with SDP).
const Invite = "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1234-1-0\r\n" +
	"From: sipp <sip:sipp@127.0.0.1:5080>;tag=1234SIPpTag001\r\n" +
	"To: service <sip:service@127.0.0.1:5060>\r\n" +
	"Call-ID: 1-1234@127.0.0.1\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Contact: sip:sipp@127.0.0.1:5080\r\n" +
	"Max-Forwards: 70\r\n" +
	"Subject: Performance Test\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 129\r\n\r\n" +
	"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

// Register is register.xml's REGISTER.
const Register = "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1234-1-0\r\n" +
	"Max-Forwards: 70\r\n" +
	"From: <sip:user1@127.0.0.1>;tag=1\r\n" +
	"To: <sip:user1@127.0.0.1>\r\n" +
	"Call-ID: 1-1234@127.0.0.1\r\n" +
	"CSeq: 1 REGISTER\r\n" +
	"Contact: <sip:user1@127.0.0.1:5090>\r\n" +
	"Expires: 3600\r\n" +
	"Content-Length: 0\r\n\r\n"

// Reply200 is sipp's uas 200 OK to Invite as kamd receives it after a
// stateless forward: kamd's Via on top, then sipp's uac's.
const Reply200 = "SIP/2.0 200 OK\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsl1x2y3z4a5b6c7\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-1234-1-0\r\n" +
	"From: sipp <sip:sipp@127.0.0.1:5080>;tag=1234SIPpTag001\r\n" +
	"To: service <sip:service@127.0.0.1:5060>;tag=5678SIPpTag011\r\n" +
	"Call-ID: 1-1234@127.0.0.1\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Contact: <sip:127.0.0.1:5070;transport=UDP>\r\n" +
	"Content-Type: application/sdp\r\n" +
	"Content-Length: 129\r\n\r\n" +
	"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
