package validity

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// keywordsMarkdown renders the keyword tables (keywords, weak) as the
// markdown docs/ipsec.md shows between its markers: one row per class of
// accepted keywords, one row per reason for the refused ones.
func keywordsMarkdown() string {
	classes := []struct {
		c    algClass
		what string
	}{
		{encr, "classic encryption (needs an integrity algorithm)"},
		{aead, "AEAD encryption (no integrity algorithm)"},
		{integ, "integrity"},
		{prf, "PRF (IKE only)"},
		{dh, "DH group (IKE: required; ESP: optional, PFS on CHILD_SA rekeys)"},
		{esn, "extended sequence numbers (ESP only)"},
		{nopfs, "explicitly no PFS (ESP only)"},
	}
	var b strings.Builder
	b.WriteString("| accepted | keywords |\n| --- | --- |\n")
	for _, cl := range classes {
		var names []string
		for n, c := range keywords {
			if c == cl.c {
				names = append(names, n)
			}
		}
		b.WriteString("| " + cl.what + " | " + code(names) + " |\n")
	}
	byWhy := map[string][]string{}
	for n, why := range weak {
		byWhy[why] = append(byWhy[why], n)
	}
	var whys []string
	for why := range byWhy {
		whys = append(whys, why)
	}
	slices.Sort(whys)
	b.WriteString("\n| refused | why |\n| --- | --- |\n")
	for _, why := range whys {
		b.WriteString("| " + code(byWhy[why]) + " | " + why + " |\n")
	}
	return b.String()
}

// code sorts names and formats them as markdown code, blank-separated.
func code(names []string) string {
	slices.Sort(names)
	return "`" + strings.Join(names, "` `") + "`"
}

// TestDocsListTheKeywords: docs/ipsec.md lists exactly the keywords the
// code accepts and refuses, with the code's reasons.
func TestDocsListTheKeywords(t *testing.T) {
	raw, err := os.ReadFile("../../../docs/ipsec.md")
	if err != nil {
		t.Fatal(err)
	}
	const begin, end = "<!-- keywords:begin (generated from edge/dataplane/validity's tables; TestDocsListTheKeywords) -->\n", "<!-- keywords:end -->"
	doc := string(raw)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("docs/ipsec.md lacks the markers %q ... %q", begin, end)
	}
	if got, want := doc[i+len(begin):j], keywordsMarkdown(); got != want {
		if os.Getenv("MESHWAN_UPDATE_DOCS") == "1" {
			if err := os.WriteFile("../../../docs/ipsec.md", []byte(doc[:i+len(begin)]+want+doc[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("docs/ipsec.md's keyword tables differ from the code's (MESHWAN_UPDATE_DOCS=1 go test -run TestDocsListTheKeywords rewrites them); want:\n%s", want)
	}
}
