package core

import (
	"context"
	"fmt"
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
	// CallbackArg marks the index of an argument naming a script callback
	// (t_on_failure...), checked at load time when it is a literal.
	CallbackArg int
	Fn          func(m *Msg, args []Val) (Val, error)
}

// Sig renders "name(str, int) -> int" for docs and api_list.
func (f *Func) Sig() string {
	s := f.Name + "("
	for i, a := range f.Args {
		if i > 0 {
			s += ", "
		}
		s += a.String()
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

	// Lifecycle fields (issue 8, kamd wiring). Static marks a param that
	// cannot change in a running kamd (it sizes or opens something at
	// Init): a reload that changes it is refused with 409, like a listen
	// change. A param a new script no longer sets goes back to Default.
	Static bool
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
}

// Module is a module's single export table.
type Module struct {
	Name   string // "" for core KSR.*; "hdr", "pv", "x" are core sub-modules
	Doc    string
	Params []Param
	Funcs  []Func
	RPC    []RPCMethod
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
	factories = map[string]Factory{}
)

// Register makes a module available; called from module packages' init.
func Register(name string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := factories[name]; dup {
		panic("core: module registered twice: " + name)
	}
	factories[name] = f
}

// Factories returns the registered factories sorted by name, core first.
func Factories() []Factory {
	regMu.Lock()
	defer regMu.Unlock()
	names := make([]string, 0, len(factories))
	for n := range factories {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]Factory, 0, len(names))
	for _, n := range names {
		out = append(out, factories[n])
	}
	return out
}
