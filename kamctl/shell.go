package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/chzyer/readline"
)

func isTerminal(f *os.File) bool {
	return f != nil && readline.IsTerminal(int(f.Fd()))
}

// shell is the interactive mode: method names complete with Tab, history is
// kept in ~/.kamctl_history. Commands are the same as on the command line,
// plus "quit"/"exit".
func (a *app) shell() int {
	names, err := a.listMethods()
	if err != nil {
		return a.fail(err)
	}
	var items []readline.PrefixCompleterInterface
	var helpItems []readline.PrefixCompleterInterface
	for _, n := range names {
		items = append(items, readline.PcItem(n))
		helpItems = append(helpItems, readline.PcItem(n))
	}
	items = append(items,
		readline.PcItem("help", helpItems...),
		readline.PcItem("ls"), readline.PcItem("watch"), readline.PcItem("version"),
		readline.PcItem("quit"), readline.PcItem("exit"))
	history := ""
	if home, err := os.UserHomeDir(); err == nil {
		history = filepath.Join(home, ".kamctl_history")
	}
	rl, err := readline.NewEx(&readline.Config{
		Prompt:          "kamctl> ",
		HistoryFile:     history,
		AutoComplete:    readline.NewPrefixCompleter(items...),
		InterruptPrompt: "^C",
		EOFPrompt:       "exit",
	})
	if err != nil {
		fmt.Fprintf(a.stderr, "kamctl: %v\n", err)
		return exitUsage
	}
	defer rl.Close()
	a.stdout, a.stderr = rl.Stdout(), rl.Stderr()
	fmt.Fprintf(a.stdout, "%s connected to %s; Tab completes, \"ls\" lists methods, Ctrl-D quits\n", versionString(), a.url)
	for {
		line, err := rl.Readline()
		if errors.Is(err, readline.ErrInterrupt) {
			if line == "" {
				return exitOK
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			return exitOK
		}
		if err != nil {
			return exitOK
		}
		words, err := splitWords(strings.TrimSpace(line))
		if err != nil {
			fmt.Fprintf(a.stderr, "kamctl: %v\n", err)
			continue
		}
		if len(words) == 0 {
			continue
		}
		switch words[0] {
		case "quit", "exit":
			return exitOK
		case "watch":
			fmt.Fprintln(a.stderr, "kamctl: watch is not available in the shell; run \"kamctl watch\"")
			continue
		}
		a.exec(words)
	}
}
