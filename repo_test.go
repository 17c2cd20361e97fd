// Package meshwan_test holds repository-wide checks: every package has a
// doc comment, and the edge binary links no controller or etcd code.
package meshwan_test

import (
	"os/exec"
	"strings"
	"testing"
)

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

func TestEveryPackageHasDocComment(t *testing.T) {
	for _, line := range goList(t, "-f", "{{.ImportPath}} {{.Name}} {{if .Doc}}doc{{end}}", "./...") {
		f := strings.Fields(line)
		if len(f) < 2 || f[1] == "main" || f[0] == "github.com/meshwan/meshwan" {
			continue // commands document themselves in main.go's comment, checked by go vet's usual reading
		}
		if len(f) < 3 {
			t.Errorf("package %s has no package doc comment", f[0])
		}
	}
}

// TestEdgeLinksNoControllerCode keeps the edge binary small and its attack
// surface honest: it must not contain the controller, etcd, or the web UI.
func TestEdgeLinksNoControllerCode(t *testing.T) {
	forbidden := []string{"github.com/meshwan/meshwan/controller/", "go.etcd.io/etcd/server", "go.etcd.io/etcd/client", "github.com/meshwan/meshwan/web"}
	for _, dep := range goList(t, "-deps", "./edge/cmd/meshwan-edge") {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("meshwan-edge links %s", dep)
			}
		}
	}
}
