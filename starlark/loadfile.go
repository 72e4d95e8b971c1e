package starlark

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// MaxScriptSize caps a script file and every file it load()s: a routing
// script is kilobytes; a link to /dev/zero or a huge file must not make
// kamd read without end.
const MaxScriptSize = 1 << 20

// ReadScript reads a script file: a regular file (after following links)
// of at most MaxScriptSize bytes. Errors are *os.PathError, naming the path.
func ReadScript(path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO for reading would wait for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("not a regular file (%s)", fi.Mode().Type())}
	}
	if fi.Size() > MaxScriptSize {
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("%d bytes, over the %d-byte limit for scripts", fi.Size(), MaxScriptSize)}
	}
	// The file may grow between Stat and Read: never read past the cap.
	src, err := io.ReadAll(io.LimitReader(f, MaxScriptSize+1))
	if err != nil {
		return nil, err
	}
	if len(src) > MaxScriptSize {
		return nil, &os.PathError{Op: "read", Path: path, Err: fmt.Errorf("over the %d-byte limit for scripts", MaxScriptSize)}
	}
	return src, nil
}

// loadPath resolves load(module) against the script's directory: the file
// must be, once every link is followed, inside that directory (a link to
// /etc/passwd is refused), and ReadScript's rules apply (a link to
// /dev/zero is not a regular file).
func loadPath(dir, module string) (string, error) {
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	realDir, err = filepath.Abs(realDir)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(filepath.Join(dir, module))
	if err != nil {
		return "", err
	}
	real, err = filepath.Abs(real)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(real, realDir+string(filepath.Separator)) {
		return "", fmt.Errorf("%s is a link to %s, outside the script's directory %s", module, real, realDir)
	}
	return real, nil
}
