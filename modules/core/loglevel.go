package core

import (
	"fmt"
	"log/slog"
	"strings"
)

// Log levels above slog's: Kamailio's crit and alert.
const (
	LevelCrit  = slog.LevelError + 4
	LevelAlert = slog.LevelError + 8
)

// logLevels is the one map of level names in kamgo: Kamailio's (xlog's
// "L_ERR", core's "err") and slog's ("error", "warning"). kamd's --log-level,
// core_param("log_level"), xlog and route tests all read it.
var logLevels = map[string]slog.Level{
	"dbg": slog.LevelDebug, "debug": slog.LevelDebug,
	"info": slog.LevelInfo, "notice": slog.LevelInfo,
	"warn": slog.LevelWarn, "warning": slog.LevelWarn,
	"err": slog.LevelError, "error": slog.LevelError,
	"crit": LevelCrit, "alert": LevelAlert, "bug": LevelAlert,
}

// ParseLogLevel accepts a level name in any case, with or without
// Kamailio's "L_" prefix: "L_ERR", "err", "error", "debug".
func ParseLogLevel(s string) (slog.Level, error) {
	l, ok := logLevels[strings.TrimPrefix(strings.ToLower(s), "l_")]
	if !ok {
		return 0, fmt.Errorf("unknown log level %q (dbg/debug, info, notice, warn, err/error, crit, alert)", s)
	}
	return l, nil
}

// LevelName is Kamailio's name of a log level: dbg, info, warn, err, crit, alert.
func LevelName(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "dbg"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	case l < LevelCrit:
		return "err"
	case l < LevelAlert:
		return "crit"
	}
	return "alert"
}
