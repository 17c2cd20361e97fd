package browsertest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestLabScreenshot photographs a running lab (`make lab`): it signs in to
// the dashboard at MESHWAN_LAB_URL with the token in MESHWAN_LAB_TOKEN_FILE,
// waits until every tunnel the lab's edges report is up, and saves the
// overview (with -update-screenshot, as the README's image). It skips when
// no lab is named.
func TestLabScreenshot(t *testing.T) {
	base, tokenFile := os.Getenv("MESHWAN_LAB_URL"), os.Getenv("MESHWAN_LAB_TOKEN_FILE")
	if base == "" || tokenFile == "" {
		t.Skip("set MESHWAN_LAB_URL and MESHWAN_LAB_TOKEN_FILE to photograph a running `make lab`")
	}
	requireBrowser(t)
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, 1440, 900)
	ctx := b.root
	do(t, ctx, "open the dashboard", chromedp.Navigate(base+"/"))
	waitJS(t, ctx, "the login form", `!document.getElementById("login").hidden`)
	do(t, ctx, "log in", chromedp.SendKeys(chromedp.ID("login-token"), strings.TrimSpace(string(tok))),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)))
	waitJS(t, ctx, "every reported tunnel up", `(() => { const s = window.meshwan && window.meshwan.state;
		return s && s.tunnels.length > 0 && s.tunnels.every(t => t.state === "up"); })()`)
	path := screenshot(t, ctx, artifactsDir(t), "lab")
	b.checkNoErrors()
	if *updateScreenshot {
		png, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "images", "dashboard.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
