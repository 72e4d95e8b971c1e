package rpc

import (
	"context"
	"strings"
	"time"
)

// Limits for events.subscribe.
const (
	maxTopics            = 64
	maxTopicLen          = 128
	defaultStatsInterval = 5 * time.Second
	maxStatsInterval     = 3600
)

// MethodInfo is the result of system.methodHelp.
type MethodInfo struct {
	Name     string      `json:"name"`
	Doc      string      `json:"doc"`
	Params   []ParamInfo `json:"params"`
	Result   string      `json:"result"`
	ReadOnly bool        `json:"read_only"`
}

// ParamInfo describes one parameter in MethodInfo.
type ParamInfo struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Doc      string `json:"doc,omitempty"`
	Optional bool   `json:"optional,omitempty"`
	Variadic bool   `json:"variadic,omitempty"`
}

func (s *Server) registerBuiltins() {
	s.MustRegister(Method{
		Name:     "system.listMethods",
		Doc:      "List the names of all RPC methods, sorted.",
		Result:   "array of strings",
		ReadOnly: true,
		Handler: func(ctx context.Context, p Params) (any, error) {
			return s.reg.names(), nil
		},
	})
	s.MustRegister(Method{
		Name:     "system.methodHelp",
		Doc:      "Describe a method: doc, params, result shape and whether read-only.",
		Params:   []Param{{Name: "name", Type: TypeString, Doc: "method name"}},
		Result:   "{name, doc, params: [{name, type, doc, optional, variadic}], result, read_only}",
		ReadOnly: true,
		Handler: func(ctx context.Context, p Params) (any, error) {
			m, err := s.namedMethod(p)
			if err != nil {
				return nil, err
			}
			info := MethodInfo{Name: m.Name, Doc: m.Doc, Result: m.Result, ReadOnly: m.ReadOnly, Params: []ParamInfo{}}
			if info.Doc == "" {
				info.Doc = "undocumented"
			}
			for _, pp := range m.Params {
				t := pp.Type
				if t == "" {
					t = TypeAny
				}
				info.Params = append(info.Params, ParamInfo{pp.Name, t, pp.Doc, pp.Optional, pp.Variadic})
			}
			return info, nil
		},
	})
	s.MustRegister(Method{
		Name: "system.methodSignature",
		Doc: "XML-RPC style signatures of a method: one array per accepted arity, " +
			"the result shape first, then the param types.",
		Params:   []Param{{Name: "name", Type: TypeString, Doc: "method name"}},
		Result:   "array of arrays of strings",
		ReadOnly: true,
		Handler: func(ctx context.Context, p Params) (any, error) {
			m, err := s.namedMethod(p)
			if err != nil {
				return nil, err
			}
			return signatures(m), nil
		},
	})
	s.MustRegister(Method{
		Name: "events.subscribe",
		Doc: "Subscribe this websocket connection to event topics (a module name such as \"usrloc\", \"us*\" a prefix, \"*\" every topic " +
			"but stats). Events arrive as notifications {method:\"event\", params:{topic, data, ts}}. " +
			"\"stats\" is periodic: every interval seconds (default 5, min 1).",
		Params: []Param{
			{Name: "topics", Type: TypeAny, Doc: "topic name or array of names"},
			{Name: "interval", Type: TypeInt, Doc: "stats period in seconds (1..3600)", Optional: true},
		},
		Result:   "{topics: [string], interval: int}",
		ReadOnly: true,
		Handler:  s.subscribe,
	})
	s.MustRegister(Method{
		Name:     "events.unsubscribe",
		Doc:      "Unsubscribe from the given topics, or from all topics when none is given.",
		Params:   []Param{{Name: "topics", Type: TypeAny, Doc: "topic name or array of names", Optional: true}},
		Result:   "{topics: [string]} (the remaining subscriptions)",
		ReadOnly: true,
		Handler:  s.unsubscribe,
	})
}

func signatures(m *Method) [][]string {
	result := m.Result
	if result == "" {
		result = "object"
	}
	var out [][]string
	sig := []string{result}
	for _, p := range m.Params {
		if p.Optional {
			out = append(out, append([]string(nil), sig...))
		}
		t := p.Type
		if t == "" {
			t = TypeAny
		}
		if p.Variadic {
			t += "..."
		}
		sig = append(sig, t)
	}
	return append(out, sig)
}

// topicList reads a topic name or an array of names.
func topicList(p Params, i int) ([]string, error) {
	if !p.Has(i) {
		return nil, nil
	}
	raw, _ := p.Raw(i)
	var list []string
	switch jsonKind(raw) {
	case "string":
		s, _ := p.String(i)
		list = []string{s}
	case "array":
		if err := p.Decode(i, &list); err != nil {
			return nil, InvalidParamsf("topics: expected a string or an array of strings")
		}
	default:
		return nil, InvalidParamsf("topics: expected a string or an array of strings")
	}
	if len(list) > maxTopics {
		return nil, InvalidParamsf("topics: at most %d", maxTopics)
	}
	for _, t := range list {
		if t == "" || len(t) > maxTopicLen || strings.ContainsAny(t, " \t\r\n") {
			return nil, InvalidParamsf("topics: bad topic name %q", t)
		}
		if t == TopicDropped {
			return nil, InvalidParamsf("topics: %q is reserved", t)
		}
	}
	return list, nil
}

// namedMethod is the method system.methodHelp and methodSignature describe.
func (s *Server) namedMethod(p Params) (*Method, error) {
	name, _ := p.String(0)
	m := s.reg.lookup(name)
	if m == nil {
		return nil, Errorf(CodeNotFound, "command %s not found", name)
	}
	return m, nil
}

// wsTopics is (un)subscribe's preamble: the websocket the call came on
// and its topic list.
func wsTopics(ctx context.Context, p Params, method string) (*wsConn, []string, error) {
	c, _ := ctx.Value(connKey).(*wsConn)
	if c == nil {
		return nil, nil, BadRequestf("%s needs a websocket connection (/ws)", method)
	}
	topics, err := topicList(p, 0)
	if err != nil {
		return nil, nil, err
	}
	return c, topics, nil
}

func (s *Server) subscribe(ctx context.Context, p Params) (any, error) {
	c, topics, err := wsTopics(ctx, p, "events.subscribe")
	if err != nil {
		return nil, err
	}
	if len(topics) == 0 {
		return nil, InvalidParamsf("topics: missing")
	}
	var interval time.Duration
	if p.Has(1) {
		n, err := p.Int(1)
		if err != nil {
			return nil, err
		}
		if n < 1 || n > maxStatsInterval {
			return nil, InvalidParamsf("interval: must be 1..%d seconds", maxStatsInterval)
		}
		interval = time.Duration(n) * time.Second
	}
	if c.dropped.Load() || c.ctx.Err() != nil {
		return nil, ServerErrorf("connection closing")
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	set := c.topics.Load().with(topics)
	c.topics.Store(set)
	res := map[string]any{"topics": set.list()}
	if set.names[TopicStats] {
		restart := c.statsStop == nil
		if interval > 0 && interval != c.statsInterval {
			restart = true
		}
		if interval == 0 {
			interval = c.statsInterval
			if interval == 0 {
				interval = defaultStatsInterval
			}
		}
		if restart {
			if c.statsStop != nil {
				close(c.statsStop)
			}
			c.statsInterval = interval
			c.statsStop = make(chan struct{})
			go c.statsLoop(interval, c.statsStop)
		}
		res["interval"] = int(c.statsInterval / time.Second)
	}
	s.hub.add(c)
	return res, nil
}

func (s *Server) unsubscribe(ctx context.Context, p Params) (any, error) {
	c, topics, err := wsTopics(ctx, p, "events.unsubscribe")
	if err != nil {
		return nil, err
	}
	c.subMu.Lock()
	defer c.subMu.Unlock()
	set := c.topics.Load().without(topics)
	if topics == nil {
		set = &topicSet{}
	}
	c.topics.Store(set)
	if !set.names[TopicStats] && c.statsStop != nil {
		close(c.statsStop)
		c.statsStop = nil
		c.statsInterval = 0
	}
	if len(set.names) == 0 {
		s.hub.remove(c)
	}
	return map[string]any{"topics": set.list()}, nil
}
