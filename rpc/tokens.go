package rpc

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Environment variables read by TokensFromEnv and LoadTokens.
const (
	EnvToken   = "KAMD_RPC_TOKEN"    // an admin token
	EnvTokenRO = "KAMD_RPC_TOKEN_RO" // a read-only token
)

// LoadTokens reads a token file and adds the tokens from the environment
// (KAMD_RPC_TOKEN = admin, KAMD_RPC_TOKEN_RO = read-only). path "" reads only
// the environment.
//
// The file has one token per line: "ROLE TOKEN", ROLE being "admin" or "ro";
// blank lines and lines starting with # are ignored. Keep it mode 0600.
func LoadTokens(path string) (map[string]Role, error) {
	tokens := map[string]Role{}
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("rpc: token file: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			fields := strings.Fields(line)
			if len(fields) != 2 {
				return nil, fmt.Errorf("rpc: %s:%d: want \"ROLE TOKEN\"", path, n)
			}
			role := Role(fields[0])
			if role != RoleAdmin && role != RoleReadOnly {
				return nil, fmt.Errorf("rpc: %s:%d: unknown role %q (want admin or ro)", path, n, fields[0])
			}
			if prev, dup := tokens[fields[1]]; dup && prev != role {
				return nil, fmt.Errorf("rpc: %s:%d: token listed with two roles", path, n)
			}
			tokens[fields[1]] = role
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("rpc: token file %s: %w", path, err)
		}
	}
	for tok, role := range TokensFromEnv() {
		if prev, dup := tokens[tok]; dup && prev != role {
			return nil, fmt.Errorf("rpc: the same token is configured as admin and ro")
		}
		tokens[tok] = role
	}
	return tokens, nil
}

// TokensFromEnv returns the tokens set in KAMD_RPC_TOKEN (admin) and
// KAMD_RPC_TOKEN_RO (read-only); unset or empty variables are skipped.
func TokensFromEnv() map[string]Role {
	tokens := map[string]Role{}
	if t := strings.TrimSpace(os.Getenv(EnvTokenRO)); t != "" {
		tokens[t] = RoleReadOnly
	}
	if t := strings.TrimSpace(os.Getenv(EnvToken)); t != "" {
		tokens[t] = RoleAdmin
	}
	return tokens
}
