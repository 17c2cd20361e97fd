package config

import (
	"flag"
	"path/filepath"
	"strings"
	"testing"
)

func flags() (*flag.FlagSet, *string, *string, *bool) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c := fs.String("controller", "", "")
	w := fs.String("wan-interface", "", "")
	i := fs.Bool("insecure-skip-ca-verify", false, "")
	fs.String("config", "", "")
	return fs, c, w, i
}

func TestApplyFileCommandLineWins(t *testing.T) {
	fs, c, w, i := flags()
	if err := fs.Parse([]string{"--controller", "cli:7400"}); err != nil {
		t.Fatal(err)
	}
	err := ApplyBytes(fs, "edge.yaml", []byte("controller: file:7400\nwan-interface: [eth0, eth1]\ninsecure-skip-ca-verify: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if *c != "cli:7400" || *w != "eth0,eth1" || !*i {
		t.Errorf("got controller=%q wan=%q insecure=%v", *c, *w, *i)
	}
}

func TestApplyErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"controler: x\n", `edge.yaml:1: unknown setting "controler"`},
		{"controller: a\ncontroller: b\n", "edge.yaml:2: controller given twice"},
		{"insecure-skip-ca-verify: maybe\n", "edge.yaml:1: insecure-skip-ca-verify"},
		{"- a\n", "edge.yaml:1: expected a mapping"},
		{"config: /x\n", "unknown setting"},
	} {
		fs, _, _, _ := flags()
		err := ApplyBytes(fs, "edge.yaml", []byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestMissingFile(t *testing.T) {
	fs, _, _, _ := flags()
	p := filepath.Join(t.TempDir(), "none.yaml")
	if err := Apply(fs, p, false); err != nil {
		t.Errorf("default path missing: %v", err)
	}
	if err := Apply(fs, p, true); err == nil {
		t.Error("explicit path missing: no error")
	}
}

func FuzzApplyBytes(f *testing.F) {
	f.Add([]byte("controller: a:1\nwan-interface: [a]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fs, _, _, _ := flags()
		_ = ApplyBytes(fs, "f", b)
	})
}
