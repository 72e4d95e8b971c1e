package main

import (
	"fmt"
	"io"
)

// runTests is `kamd test`: route unit tests (see docs). Placeholder until the harness lands.
func runTests(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "kamd test: not implemented yet")
	return 2
}
