package node

import (
	"time"
)

// Shutdown bounds (core_param("shutdown_grace_ms"), core_param("exit_timeout")).
const (
	// DefaultShutdownGrace is how long callbacks running at SIGTERM may
	// finish before they are cancelled.
	DefaultShutdownGrace = 2 * time.Second
	// DefaultExitTimeout bounds the whole shutdown, as Kamailio's
	// exit_timeout (whose default is 60 s): past it kamd exits at once.
	DefaultExitTimeout = 10 * time.Second
)

// ShutdownGrace is the current script's shutdown_grace_ms, else the default.
func (n *Node) ShutdownGrace() time.Duration {
	if p := n.Engine.Program(); p != nil {
		if v, ok := p.Config.CoreParams["shutdown_grace_ms"]; ok {
			return time.Duration(v.Int) * time.Millisecond
		}
	}
	return DefaultShutdownGrace
}

// ExitTimeout is the current script's exit_timeout (seconds), else the
// default: the daemon (kamd/main.go) exits with status 1 when a shutdown
// takes longer.
func (n *Node) ExitTimeout() time.Duration {
	if p := n.Engine.Program(); p != nil {
		if v, ok := p.Config.CoreParams["exit_timeout"]; ok {
			return time.Duration(v.Int) * time.Second
		}
	}
	return DefaultExitTimeout
}

// stopScripts is Stop's first step: new requests get 503, callbacks under
// way get ShutdownGrace to finish, then those still running are cancelled
// at their next step and given a second to unwind.
func (n *Node) stopScripts() {
	if n.Engine == nil {
		return
	}
	grace := n.ShutdownGrace()
	running := n.Engine.Running()
	if running > 0 {
		n.Env.Log.Info("shutdown: waiting for running callbacks", "running", running, "grace", grace)
	}
	cancelled, left := n.Engine.Shutdown(grace, time.Second)
	if cancelled > 0 {
		n.Env.Log.Warn("shutdown: cancelled callbacks still running after the grace period", "cancelled", cancelled, "grace", grace, "still_running", left)
	}
}
