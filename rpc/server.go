// Package rpc is kamgo's management interface: a JSON-RPC 2.0 server (over
// websocket at /ws and HTTP POST at /RPC), its client, the method registry,
// token auth with two roles, and the event hub that pushes notifications to
// websocket subscribers. It imports nothing else of kamgo.
//
// See docs/rpc.md for the wire protocol, auth and events.
package rpc

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Defaults for Config.
const (
	DefaultAddr          = "127.0.0.1:8060"
	DefaultMaxFrameBytes = 1 << 20
	DefaultMaxConns      = 64
	DefaultSendQueue     = 256
)

// Config configures a Server.
type Config struct {
	// Addr is the TCP listen address; "" means DefaultAddr, "off" disables the server.
	Addr string
	// Tokens maps a bearer token to the role it grants. With no tokens the
	// server only accepts loopback connections and everyone is admin.
	Tokens map[string]Role
	// AllowedOrigins lists browser origins ("https://dash.example.com", or "*")
	// allowed besides the same origin, for /ws and cross-origin POST /RPC.
	AllowedOrigins []string
	// MaxFrameBytes bounds one websocket message or HTTP request body (default 1 MiB).
	MaxFrameBytes int64
	// MaxConns bounds websocket connections (default 64); beyond it (and when
	// no idle one can be evicted) the upgrade is answered 503. HTTP POSTs are
	// bounded separately (MaxHTTPInflight), so /RPC keeps working at the cap.
	MaxConns int
	// MaxConnsPerIP bounds the websockets of one remote address (default 16).
	MaxConnsPerIP int
	// AdminReserve is how many of the MaxConns slots only an admin-role caller
	// may take (default 4, at most a quarter of MaxConns).
	AdminReserve int
	// IdleTimeout closes a websocket with no subscription and no request for
	// that long (default 60 s; negative disables).
	IdleTimeout time.Duration
	// IdleGrace: at a cap, a newcomer evicts the longest-idle websocket (no
	// subscription, no request in flight) silent for at least this long (default 2 s).
	IdleGrace time.Duration
	// MaxHTTPInflight bounds concurrent POST /RPC requests (default 64).
	MaxHTTPInflight int
	// MaxResponseBytes bounds the encoded reply to one request (default 16 MiB);
	// beyond it the request is answered 507 "Response too large".
	MaxResponseBytes int64
	// MaxBatchBytes bounds the replies of one batch together (default 32 MiB).
	MaxBatchBytes int64
	// MaxRunning bounds the calls executing at once, across connections
	// (default half the CPUs, at least 1): RPC work never takes every CPU
	// from SIP; the other calls wait their turn.
	MaxRunning int
	// MemoryBudget bounds the memory all encoded replies may hold at once,
	// across connections, until written out (default 64 MiB); beyond it
	// requests are answered 503 "Server busy".
	MemoryBudget int64
	// SendQueue is the per-websocket outgoing queue length (default 256). An
	// event subscriber whose queue is full is dropped as a slow consumer.
	SendQueue int
	// TLSCertFile and TLSKeyFile, when both set, make ListenAndServe/Serve speak TLS (wss/https).
	TLSCertFile, TLSKeyFile string
	// Logger receives server logs; nil discards them.
	Logger *slog.Logger
	// Observe, when set, is told of every call executed: the method name as
	// requested and the error code answered (0 for success). kamd's
	// /metrics counts RPC requests with it.
	Observe func(method string, code int)
}

// Server is a JSON-RPC 2.0 server. Create it with NewServer, add methods with
// Register (at any time), then run ListenAndServe or mount Handler.
type Server struct {
	cfg    Config
	log    *slog.Logger
	reg    registry
	hub    *Hub
	budget *budget
	// running holds a token per call executing (MaxRunning).
	running chan struct{}
	// httpActive counts POST /RPC requests in flight.
	httpActive atomic.Int64

	// Keepalive timing (tests shorten them).
	pingPeriod, pongWait, writeWait, dropGrace time.Duration

	upgrader websocket.Upgrader

	extra map[string]http.Handler // Handle: more HTTP handlers on the same listener

	mu      sync.Mutex
	servers []*http.Server
	addr    string
	conns   map[*wsConn]struct{}
	closed  bool
	// wsCount and perIP count websocket slots (handshakes included), under mu.
	wsCount int
	perIP   map[string]int
}

// NewServer returns a server with the built-in methods (system.listMethods,
// system.methodHelp, system.methodSignature, events.subscribe,
// events.unsubscribe) registered. Configuration errors are reported by Validate,
// ListenAndServe and Serve.
func NewServer(cfg Config) *Server {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	positiveOr(&cfg.MaxFrameBytes, DefaultMaxFrameBytes)
	positiveOr(&cfg.MaxConns, DefaultMaxConns)
	positiveOr(&cfg.SendQueue, DefaultSendQueue)
	positiveOr(&cfg.MaxConnsPerIP, DefaultMaxConnsPerIP)
	positiveOr(&cfg.AdminReserve, DefaultAdminReserve)
	cfg.AdminReserve = min(cfg.AdminReserve, cfg.MaxConns/4)
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	positiveOr(&cfg.IdleGrace, DefaultIdleGrace)
	positiveOr(&cfg.MaxHTTPInflight, DefaultMaxHTTPInflight)
	positiveOr(&cfg.MaxResponseBytes, DefaultMaxResponseBytes)
	positiveOr(&cfg.MaxBatchBytes, DefaultMaxBatchBytes)
	cfg.MaxBatchBytes = max(cfg.MaxBatchBytes, cfg.MaxResponseBytes)
	positiveOr(&cfg.MemoryBudget, DefaultMemoryBudget)
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = max(1, runtime.GOMAXPROCS(0)/2)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tokens := make(map[string]Role, len(cfg.Tokens))
	for k, v := range cfg.Tokens {
		tokens[k] = v
	}
	cfg.Tokens = tokens
	s := &Server{
		cfg:        cfg,
		log:        log,
		pingPeriod: 50 * time.Second,
		pongWait:   60 * time.Second,
		writeWait:  10 * time.Second,
		dropGrace:  2 * time.Second,
		conns:      map[*wsConn]struct{}{},
		perIP:      map[string]int{},
		budget:     &budget{max: cfg.MemoryBudget},
		running:    make(chan struct{}, cfg.MaxRunning),
	}
	s.hub = &Hub{subs: map[*wsConn]struct{}{}, log: log}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		CheckOrigin:      func(*http.Request) bool { return true }, // checked before Upgrade
	}
	s.registerBuiltins()
	return s
}

// Register adds a method. It fails on a duplicate name or an invalid declaration.
// Handlers must return a JSON object or array (or nil for {}); see Method.
func (s *Server) Register(m Method) error { return s.reg.register(m) }

// MustRegister is Register that panics on error.
func (s *Server) MustRegister(m Method) {
	if err := s.Register(m); err != nil {
		panic(err)
	}
}

// Methods returns the sorted names of all registered methods.
func (s *Server) Methods() []string { return s.reg.names() }

// Hub returns the event hub.
func (s *Server) Hub() *Hub { return s.hub }

// Enabled reports whether the configuration enables the server (Addr != "off").
func (s *Server) Enabled() bool { return s.cfg.Addr != "off" }

// Addr returns the address the server listens on once serving, else "".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Validate checks the configuration: known roles, non-empty tokens, and no
// listening on a non-loopback address without any token.
func (s *Server) Validate() error {
	for tok, role := range s.cfg.Tokens {
		if tok == "" || strings.ContainsAny(tok, " \t\r\n") {
			return errors.New("rpc: empty token or token containing whitespace")
		}
		if role != RoleAdmin && role != RoleReadOnly {
			return fmt.Errorf("rpc: unknown role %q (want %q or %q)", role, RoleAdmin, RoleReadOnly)
		}
	}
	if !s.Enabled() {
		return nil
	}
	host, _, err := net.SplitHostPort(s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("rpc: bad listen address %q: %v", s.cfg.Addr, err)
	}
	if len(s.cfg.Tokens) == 0 && !isLoopbackHost(host) {
		return fmt.Errorf("rpc: refusing to listen on non-loopback address %s without a token (set KAMD_RPC_TOKEN or a token file)", s.cfg.Addr)
	}
	return nil
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if i := strings.IndexByte(host, '%'); i >= 0 { // zone
		host = host[:i]
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isLoopbackAddr(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	case nil:
		return true
	}
	host, _, err := net.SplitHostPort(a.String())
	return err == nil && isLoopbackHost(host)
}

// ListenAndServe listens on Config.Addr and serves until ctx is cancelled, then
// shuts down gracefully and returns nil. With Addr "off" it just waits for ctx.
func (s *Server) ListenAndServe(ctx context.Context) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if !s.Enabled() {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("rpc: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(sctx)
	})
	defer stop()
	err = s.Serve(ln)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Serve serves on ln until Shutdown or Close. Without tokens ln must be a loopback address.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.Validate(); err != nil {
		ln.Close()
		return err
	}
	if len(s.cfg.Tokens) == 0 && !isLoopbackAddr(ln.Addr()) {
		ln.Close()
		return fmt.Errorf("rpc: refusing to serve on non-loopback address %s without a token", ln.Addr())
	}
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.servers = append(s.servers, hs)
	s.addr = ln.Addr().String()
	s.mu.Unlock()
	// kamd logs "rpc listening on ADDR (scheme)" itself; the server stays quiet.
	var err error
	if s.cfg.TLSCertFile != "" && s.cfg.TLSKeyFile != "" {
		err = hs.ServeTLS(ln, s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
	} else {
		err = hs.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the listeners, closes websocket connections (close code 1001)
// and waits for in-flight HTTP requests until ctx expires.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	servers := append([]*http.Server(nil), s.servers...)
	conns := make([]*wsConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.closeWith(websocket.CloseGoingAway, "server shutting down")
	}
	var first error
	for _, hs := range servers {
		if err := hs.Shutdown(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Close stops the server immediately.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Shutdown(ctx)
	s.mu.Lock()
	servers := append([]*http.Server(nil), s.servers...)
	s.mu.Unlock()
	for _, hs := range servers {
		hs.Close()
	}
	return nil
}

// Handler returns the HTTP handler serving GET /ws (websocket) and POST
// /RPC, plus the handlers added with Handle.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/RPC", s.serveHTTP)
	mux.HandleFunc("/ws", s.serveWS)
	s.mu.Lock()
	for pattern, h := range s.extra {
		mux.Handle(pattern, h)
	}
	s.mu.Unlock()
	return mux
}

// Handle mounts another HTTP handler on the RPC listener (same address,
// same TLS), such as kamd's dashboard and /metrics. Call it before
// serving. h is not authenticated: wrap it in Protect if it must be.
func (s *Server) Handle(pattern string, h http.Handler) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.extra == nil {
		s.extra = map[string]http.Handler{}
	}
	s.extra[pattern] = h
}

// Protect applies the RPC auth rule to h: the same origin and loopback
// checks as POST /RPC and, when tokens are configured, a bearer token of
// either role in the Authorization header (401 otherwise).
func (s *Server) Protect(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.originOK(r) || !s.localOK(r) {
			http.Error(w, "Forbidden: origin or host not allowed", http.StatusForbidden)
			return
		}
		if role, _ := s.authenticate(r, false); role == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kamgo"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// authenticate returns the caller's role, or "" if refused. For websockets it
// also accepts ?token= and a "bearer.<token>" subprotocol; sub is the offered
// subprotocol carrying the token, if any.
func (s *Server) authenticate(r *http.Request, ws bool) (role Role, sub string) {
	if len(s.cfg.Tokens) == 0 {
		return RoleAdmin, ""
	}
	var cands []string
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		cands = append(cands, strings.TrimSpace(h[7:]))
	}
	if ws {
		if t := r.URL.Query().Get("token"); t != "" {
			cands = append(cands, t)
		}
		for _, p := range websocket.Subprotocols(r) {
			if t, ok := strings.CutPrefix(p, "bearer."); ok && t != "" {
				cands = append(cands, t)
				sub = p
			}
		}
	}
	for _, c := range cands {
		if r := s.lookupToken(c); r != "" {
			return r, sub
		}
	}
	return "", ""
}

func (s *Server) lookupToken(tok string) Role {
	var found Role
	for k, role := range s.cfg.Tokens {
		if subtle.ConstantTimeCompare([]byte(k), []byte(tok)) == 1 {
			found = role
		}
	}
	return found
}

// originOK: no Origin (non-browser), same origin as Host, or an allowed origin.
func (s *Server) originOK(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	if s.allowedOrigin(o) {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

func (s *Server) allowedOrigin(o string) bool {
	for _, a := range s.cfg.AllowedOrigins {
		if a == "*" || strings.EqualFold(strings.TrimRight(a, "/"), o) {
			return true
		}
	}
	return false
}

// localOK guards the token-less mode: the connection must have arrived on a
// loopback address and name a loopback Host (against DNS rebinding).
func (s *Server) localOK(r *http.Request) bool {
	if len(s.cfg.Tokens) > 0 {
		return true
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && !isLoopbackAddr(la) {
		return false
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	return host == "" || isLoopbackHost(host)
}

func (s *Server) acquireHTTP() bool {
	if s.httpActive.Add(1) > int64(s.cfg.MaxHTTPInflight) {
		s.httpActive.Add(-1)
		return false
	}
	return true
}

func (s *Server) releaseHTTP() { s.httpActive.Add(-1) }

// MemoryInUse returns the bytes encoded replies hold now (budget use).
func (s *Server) MemoryInUse() int64 { return s.budget.InUse() }

// remoteIP is the caller's address without the port.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// acquireWS takes a websocket slot for a caller from ip: within the per-IP
// cap and the global cap (whose last AdminReserve slots only admin may
// take). At a cap it evicts the longest-idle websocket (of that IP for the
// per-IP cap) to make room; failing that it refuses.
func (s *Server) acquireWS(ip string, role Role) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perIP[ip] >= s.cfg.MaxConnsPerIP && !s.evictIdle(ip) {
		return false
	}
	limit := s.cfg.MaxConns
	if role != RoleAdmin {
		limit -= s.cfg.AdminReserve
	}
	if s.wsCount >= limit && !s.evictIdle("") {
		return false
	}
	s.wsCount++
	s.perIP[ip]++
	return true
}

// releaseWS gives a slot back (under mu).
func (s *Server) releaseWSLocked(ip string) {
	s.wsCount--
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

// evictIdle closes the longest-idle websocket (of ip, or any when ip is "")
// silent for IdleGrace at least, and frees its slot at once (under mu).
func (s *Server) evictIdle(ip string) bool {
	var victim *wsConn
	var oldest int64
	limit := time.Now().Add(-s.cfg.IdleGrace).UnixNano()
	for c := range s.conns {
		if c.slotFreed || (ip != "" && c.ip != ip) || !c.idle() {
			continue
		}
		if la := c.lastActive.Load(); la <= limit && (victim == nil || la < oldest) {
			victim, oldest = c, la
		}
	}
	if victim == nil {
		return false
	}
	victim.slotFreed = true
	s.releaseWSLocked(victim.ip)
	s.log.Debug("rpc: evicting an idle websocket to make room", "remote", victim.ip)
	victim.closeWith(websocket.ClosePolicyViolation, "idle connection evicted at the connection cap")
	return true
}

// httpStatus maps a single response's error code to an HTTP status, mirroring
// Kamailio's jsonrpcs for HTTP-like codes.
func httpStatus(code int) int {
	switch {
	case code == 0:
		return http.StatusOK
	case code >= 100 && code <= 599:
		return code
	case code == CodeParseError, code == CodeInvalidRequest, code == CodeInvalidParams:
		return http.StatusBadRequest
	case code == CodeMethodNotFound:
		return http.StatusNotFound
	default:
		return http.StatusInternalServerError
	}
}

func writeJSONError(w http.ResponseWriter, status int, e *Error) {
	b, _ := json.Marshal(errResponse(nil, e))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin != "" && s.allowedOrigin(origin) {
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Add("Vary", "Origin")
	}
	if r.Method == http.MethodOptions && origin != "" {
		if !s.allowedOrigin(origin) {
			http.Error(w, "origin not allowed", http.StatusForbidden)
			return
		}
		w.Header().Set("Access-Control-Allow-Methods", "POST")
		w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
		w.Header().Set("Access-Control-Max-Age", "600")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSONError(w, http.StatusMethodNotAllowed, NewError(CodeInvalidRequest, "Invalid Request: use POST"))
		return
	}
	if !s.originOK(r) || !s.localOK(r) {
		writeJSONError(w, http.StatusForbidden, NewError(CodeForbidden, "Forbidden: origin or host not allowed"))
		return
	}
	role, _ := s.authenticate(r, false)
	if role == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kamgo"`)
		writeJSONError(w, http.StatusUnauthorized, stdError(CodeUnauthorized))
		return
	}
	if !s.acquireHTTP() {
		writeJSONError(w, http.StatusServiceUnavailable, NewError(CodeServerError, "Too many connections"))
		return
	}
	defer s.releaseHTTP()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxFrameBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSONError(w, http.StatusRequestEntityTooLarge, NewError(CodeInvalidRequest, "Invalid Request: request too large"))
			return
		}
		return
	}
	out, code := s.handle(r.Context(), role, body)
	if out == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	defer out.release()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.FormatInt(out.Len(), 10))
	w.WriteHeader(httpStatus(code))
	out.WriteTo(w)
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !s.originOK(r) || !s.localOK(r) {
		http.Error(w, "Forbidden: origin or host not allowed", http.StatusForbidden)
		return
	}
	role, sub := s.authenticate(r, true)
	if role == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kamgo"`)
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	ip := remoteIP(r)
	if !s.acquireWS(ip, role) {
		http.Error(w, "Too many connections", http.StatusServiceUnavailable)
		return
	}
	releaseSlot := func() {
		s.mu.Lock()
		s.releaseWSLocked(ip)
		s.mu.Unlock()
	}
	// Subprotocol: prefer "jsonrpc" if offered, else echo the bearer one
	// (browsers fail the handshake when none of the offered ones is selected).
	var hdr http.Header
	for _, p := range websocket.Subprotocols(r) {
		if p == "jsonrpc" {
			sub = p
		}
	}
	if sub != "" {
		hdr = http.Header{"Sec-Websocket-Protocol": {sub}}
	}
	wsc, err := s.upgrader.Upgrade(w, r, hdr)
	if err != nil {
		releaseSlot()
		return // Upgrade already replied
	}
	c := newWSConn(s, wsc, role)
	c.ip = ip
	s.mu.Lock()
	if s.closed {
		s.releaseWSLocked(ip)
		s.mu.Unlock()
		wsc.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		wsc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	go func() {
		c.run()
		s.mu.Lock()
		delete(s.conns, c)
		if !c.slotFreed {
			s.releaseWSLocked(ip)
		}
		s.mu.Unlock()
	}()
}

// Call invokes a registered method in process, with the given role, through
// the same lookup, role check and param binding as a request on the wire.
// kamd's route tests use it (state.rpc); the result is the JSON result.
func (s *Server) Call(ctx context.Context, role Role, method string, params ...any) (json.RawMessage, error) {
	if params == nil {
		params = []any{}
	}
	raw, err := json.Marshal(params)
	if err != nil {
		return nil, InvalidParamsf("params: %v", err)
	}
	res, rerr := s.invoke(ctx, role, method, raw)
	if rerr != nil {
		return nil, rerr
	}
	buf := s.newReply()
	defer buf.release()
	err = writeResult(buf, res)
	if buf.err != nil {
		err = buf.err
	}
	switch {
	case err == nil:
		return buf.Bytes(), nil
	case errors.Is(err, errRespTooLarge), errors.Is(err, errBatchTooLarge):
		return nil, Errorf(CodeTooLarge, "Response too large: over %d bytes (rpc_max_response_bytes); page the dump (limit and cursor) or ask for less", s.cfg.MaxResponseBytes)
	case errors.Is(err, errBusy):
		return nil, s.busyError()
	}
	s.log.Error("rpc: bad handler result", "method", method, "err", err)
	return nil, stdError(CodeInternalError)
}

// Method returns the registered method of that name.
func (s *Server) Method(name string) (Method, bool) {
	m := s.reg.lookup(name)
	if m == nil {
		return Method{}, false
	}
	return *m, true
}

// positiveOr sets *v to def when it is zero or negative (unset in Config).
func positiveOr[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
