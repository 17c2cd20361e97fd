package export

import (
	"os"
	"strings"
	"testing"

	"github.com/meshwan/meshwan/controller/intent"
)

// TestDocsShowTheGoldenFiles: docs/third-party.md's worked example shows
// the seed's export exactly as Render produces it (each file in a fenced
// block). When it fails after an intended change, update the golden files
// (-update) and copy the new blocks into the page.
func TestDocsShowTheGoldenFiles(t *testing.T) {
	raw, err := os.ReadFile("../../docs/third-party.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	for _, tc := range []struct {
		f       Format
		routing intent.Routing
		names   []string
	}{
		{RansNet, intent.RoutingStatic, []string{FileMbox, FileMboxNotes}},
		{Linux, intent.RoutingStatic, []string{FileSwanctl, FileGRE, FileNFT}},
		{Linux, intent.RoutingBGP, []string{FileFRR}},
	} {
		files, err := Render(tc.f, seedInput(tc.routing))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			for _, n := range tc.names {
				if f.Name == n && !strings.Contains(doc, "`"+n+"`:\n\n```\n"+f.Content+"```\n") {
					t.Errorf("docs/third-party.md does not show %s (%s, %s) as rendered:\n%s", n, tc.f, tc.routing, f.Content)
				}
			}
		}
	}
}
