// Package fuzzcorpus owns the seed corpora of the controller's fuzz
// targets: Add gives a target its seeds and, with MESHWAN_WRITE_CORPUS=1,
// also writes them to testdata/fuzz/<FuzzName>/ in go's corpus format, so
// the seeds listed in code and the committed corpus stay one list. Test
// code only.
package fuzzcorpus

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Add adds each seed to f (see the package comment).
func Add(f *testing.F, seeds ...[]byte) {
	f.Helper()
	for _, s := range seeds {
		f.Add(s)
		if os.Getenv("MESHWAN_WRITE_CORPUS") == "" {
			continue
		}
		dir := filepath.Join("testdata", "fuzz", f.Name())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Fatal(err)
		}
		sum := sha256.Sum256(s)
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, "seed-"+hex.EncodeToString(sum[:8])), []byte(body), 0o644); err != nil {
			f.Fatal(err)
		}
	}
}
