package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCredentialCommands runs credential create/list/revoke against a real
// controller, then uses the created token: a read_only credential lists
// sites but cannot create one, and once revoked cannot do anything.
func TestCredentialCommands(t *testing.T) {
	e := startController(t)
	out := e.must(t, "credential", "create", "--name", "noc", "--role", "read_only", "--ttl", "720h")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "(noc), role read_only") {
		t.Fatalf("create printed:\n%s", out)
	}
	token, id := lines[2], strings.Fields(lines[0])[1]
	if !strings.HasPrefix(token, id+".") {
		t.Fatalf("token %q is not ID.SECRET for id %s", token, id)
	}
	if list := e.must(t, "credential", "list"); !strings.Contains(list, id) || !strings.Contains(list, "read_only") || strings.Contains(list, token) {
		t.Errorf("list:\n%s", list)
	}

	tokFile := filepath.Join(e.dir, "noc.token")
	if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.run(t, "--token-file", tokFile, "sites", "list"); err != nil {
		t.Errorf("read_only lists sites: %v", err)
	}
	_, err := e.run(t, "--token-file", tokFile, "sites", "create", "x", "--transport", "inet1=198.51.100.7", "--lan", "10.7.0.0/24")
	if err == nil || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), "operator") {
		t.Errorf("read_only creates a site: %v", err)
	}
	if _, err := e.run(t, "--token-file", tokFile, "credential", "list"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("read_only lists credentials: %v", err)
	}

	if out := e.must(t, "credential", "revoke", id); !strings.Contains(out, "revoked") {
		t.Errorf("revoke: %s", out)
	}
	if _, err := e.run(t, "--token-file", tokFile, "sites", "list"); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
		t.Errorf("revoked credential: %v", err)
	}
	if _, err := e.run(t, "credential", "create", "--name", "x", "--role", "root"); err == nil || !strings.Contains(err.Error(), "--role") {
		t.Errorf("bad role: %v", err)
	}
}
