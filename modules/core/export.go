package core

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
)

// ArgType is the type of a KSR function argument (KEMI allows str and int).
type ArgType uint8

const (
	ArgStr ArgType = iota
	ArgInt
)

func (a ArgType) String() string {
	if a == ArgInt {
		return "int"
	}
	return "str"
}

// RetType is KEMI's return convention for a function.
type RetType uint8

const (
	RetInt  RetType = iota // > 0 success, < 0 failure, 0 stop
	RetBool                // True / False
	RetXVal                // str, int or None
	RetNone                // None
)

func (r RetType) String() string {
	return [...]string{"int", "bool", "xval", "none"}[r]
}

// Route types, as a bit set so a function can say where it may be called.
type RouteType uint16

const (
	RouteRequest RouteType = 1 << iota
	RouteFailure
	RouteTmReply // tm onreply route (t_on_reply)
	RouteBranch
	RouteOnsend
	RouteReply // core reply route (ksr_reply_route)
	RouteEvent
	RouteAny RouteType = 0xffff
)

func (r RouteType) String() string {
	switch r {
	case RouteRequest:
		return "request_route"
	case RouteFailure:
		return "failure_route"
	case RouteTmReply:
		return "onreply_route"
	case RouteBranch:
		return "branch_route"
	case RouteOnsend:
		return "onsend_route"
	case RouteReply:
		return "reply_route"
	case RouteEvent:
		return "event_route"
	}
	return "route"
}

// Func is one KSR function in a module's export table. The same entry feeds
// the Starlark KSR tree, KSR.x.modf (by Name), api_list and the docs.
type Func struct {
	Name string
	Args []ArgType
	Ret  RetType
	Doc  string
	// Routes limits where the function may run; zero means anywhere.
	Routes RouteType
	// CallbackArg is the 1-based position of an argument naming a script
	// callback (t_on_failure's 1); 0 means none. When that argument is a
	// string literal the load fails unless the script defines the function.
	CallbackArg int
	// MinArgs > 0 lets a call omit the arguments after the first MinArgs
	// (Kamailio's "f(a[, b])"); Fn then gets the shorter slice.
	MinArgs int
	Fn      func(m *Msg, args []Val) (Val, error)
}

// ArityOK reports whether n arguments fit the function.
func (f *Func) ArityOK(n int) bool {
	if f.MinArgs > 0 {
		return n >= f.MinArgs && n <= len(f.Args)
	}
	return n == len(f.Args)
}

// ArityString is "2" or "1 to 2" for arity errors.
func (f *Func) ArityString() string {
	if f.MinArgs > 0 && f.MinArgs < len(f.Args) {
		return fmt.Sprintf("%d to %d", f.MinArgs, len(f.Args))
	}
	return fmt.Sprint(len(f.Args))
}

// Sig renders "name(str, int) -> int" for docs and api_list.
func (f *Func) Sig() string {
	s := f.Name + "("
	for i, a := range f.Args {
		if i > 0 {
			s += ", "
		}
		if f.MinArgs > 0 && i >= f.MinArgs {
			s += "[" + a.String() + "]"
		} else {
			s += a.String()
		}
	}
	return s + ") -> " + f.Ret.String()
}

// ParamsString is Kamailio's api_list "params" field.
func (f *Func) ParamsString() string {
	if len(f.Args) == 0 {
		return "none"
	}
	s := ""
	for i, a := range f.Args {
		if i > 0 {
			s += ", "
		}
		s += a.String()
	}
	return s
}

// Param is a modparam.
type Param struct {
	Name    string
	Type    ArgType
	Default Val
	Doc     string
	// Check validates a value in the config phase (so a bad value is a load
	// error with file:line); Set applies it when the version is installed.
	Check func(v Val) error
	Set   func(v Val) error
	// Callback marks a string param naming a script callback (uac's
	// event_callback): a load fails unless the script defines the function.
	Callback bool

	// Lifecycle fields (issue 8, kamd wiring). Static marks a param that
	// cannot change in a running kamd (it sizes or opens something at
	// Init): a reload that changes it is refused with 409, like a listen
	// change. A param a new script no longer sets goes back to Default.
	Static bool
	// Get reads the value in effect, so a test can check that a module
	// with no modparam runs with Default.
	Get func() Val
}

// Check01 is a Param.Check for a 0/1 flag param.
func Check01(name string) func(v Val) error {
	return func(v Val) error {
		if v.Int != 0 && v.Int != 1 {
			return fmt.Errorf("%s %d: want 0 or 1", name, v.Int)
		}
		return nil
	}
}

// CheckNonNegative is a Param.Check for an int param that must be >= 0.
func CheckNonNegative(name string) func(v Val) error {
	return func(v Val) error {
		if v.Int < 0 {
			return fmt.Errorf("%s %d: must not be negative", name, v.Int)
		}
		return nil
	}
}

// ApplyDefaults sets every param to its Default through its Set, so a
// module's state starts from the one place its defaults are written; the
// module's New calls it on its table instead of initialising fields with
// literals. A Default its own Check or Set refuses is a programming error.
func ApplyDefaults(m *Module) *Module {
	for i := range m.Params {
		p := &m.Params[i]
		if p.Check != nil {
			if err := p.Check(p.Default); err != nil {
				panic(fmt.Sprintf("core: %s.%s: default %v: %v", m.Name, p.Name, p.Default, err))
			}
		}
		if p.Set != nil {
			if err := p.Set(p.Default); err != nil {
				panic(fmt.Sprintf("core: %s.%s: default %v: %v", m.Name, p.Name, p.Default, err))
			}
		}
	}
	return m
}

// RPCArgs is the positional view of an RPC call's params.
type RPCArgs interface {
	Len() int
	String(i int) (string, error)
	Int(i int) (int, error)
}

// RPCParam describes one RPC parameter.
type RPCParam struct {
	Name, Type, Doc string
	Optional        bool
	// Variadic marks the last param as taking any number of values.
	Variadic bool
}

// RPCError is an application error with Kamailio's code and message.
type RPCError struct {
	Code    int
	Message string
}

func (e *RPCError) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Message) }

// RPCMethod is an RPC method exported by a module.
type RPCMethod struct {
	Name     string
	Doc      string
	Params   []RPCParam
	Result   string
	ReadOnly bool
	Handler  func(ctx context.Context, args RPCArgs) (any, error)
	// ParamError, when set, is the fault for missing or wrongly typed
	// params (Kamailio's, e.g. 400 "Invalid Parameters") instead of the
	// RPC layer's -32602 naming the param.
	ParamError *RPCError
}

// Module is a module's single export table.
type Module struct {
	Name   string // "" for core KSR.*; "hdr", "pv", "x" are core sub-modules
	Doc    string
	Params []Param
	Funcs  []Func
	RPC    []RPCMethod
	// PVs are the module's pseudo-variables ($sht(...), $ulc(...)); the
	// Env's PV lookup, api_list and the docs are built from them.
	PVs []PVDef
	// Events are the topics the module publishes through Env.Emit; the
	// docs list them and Emit logs a topic no module declares.
	Events []string

	// Lifecycle fields (issue 8, kamd wiring). Needs names the modules this
	// one depends on (for their Go API or state): Init and Start run after
	// theirs, Stop before theirs (so uac can still send through tm while it
	// stops). A missing or circular need is an error at start (OrderModules).
	Needs []string

	// Init runs after the config phase, Start when listeners are up, Stop on shutdown.
	Init  func() error
	Start func(ctx context.Context) error
	Stop  func()
	// OnReply sees every received reply before stateless forwarding; true
	// means the module took it (tm matched a transaction).
	OnReply func(m *Msg) bool
	// OnRequest sees every received request before the script; true means
	// the module fully handled it (e.g. an absorbed retransmission).
	OnRequest func(m *Msg) bool
}

// Factory builds a fresh module instance bound to an Env.
type Factory func(env *Env) *Module

var (
	regMu     sync.Mutex
	factories []Factory
)

// Register makes a module available; called from module packages' init.
// The module's name is its table's Name, written nowhere else.
func Register(f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	factories = append(factories, f)
}

// Factories returns the registered factories in registration order.
func Factories() []Factory {
	regMu.Lock()
	defer regMu.Unlock()
	return append([]Factory(nil), factories...)
}

// BuildModules builds every registered module against env, sorted by name
// (core's "" first), and records each in env; two modules of one name are
// a programming error.
func BuildModules(env *Env) []*Module {
	var mods []*Module
	seen := map[string]bool{}
	for _, f := range Factories() {
		m := f(env)
		if seen[m.Name] {
			panic("core: module registered twice: " + m.Name)
		}
		seen[m.Name] = true
		mods = append(mods, m)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Name < mods[j].Name })
	for _, m := range mods {
		env.SetModule(m)
	}
	return mods
}

// topicChecks remembers the declared event topics and the undeclared ones
// already logged.
type topicChecks struct {
	mu       sync.Mutex
	declared map[string]bool
	warned   map[string]bool
}

func (t *topicChecks) declare(topics []string) {
	if len(topics) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.declared == nil {
		t.declared = map[string]bool{}
	}
	for _, s := range topics {
		t.declared[s] = true
	}
}

func (t *topicChecks) check(log *slog.Logger, topic string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.declared[topic] || t.warned[topic] {
		return
	}
	if t.warned == nil {
		t.warned = map[string]bool{}
	}
	t.warned[topic] = true
	if log != nil {
		log.Warn("event topic is declared in no module table (Module.Events)", "topic", topic)
	}
}
