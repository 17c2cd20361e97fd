package browsertest

import (
	"context"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/meshwan/meshwan/web"
)

// A request that finds the session gone (a 401: the session expired, or
// the cookie was cleared by a sign-out the page was not told of) sends the
// page to the login form, which then holds no stream and asks for nothing,
// without a console error of its own.
func TestSessionEndedShowsLogin(t *testing.T) {
	requireBrowser(t)
	const token = "browsertest-admin-token-0123456789"
	src := &probeSource{rtt: 10, changes: make(chan struct{}, 1)}
	base := serveProbe(t, src, web.Config{Token: token})

	b := newBrowser(t, 1200, 900)
	ctx := b.root
	do(t, ctx, "open the tunnels", chromedp.Navigate(base+"/#/tunnels"))
	waitJS(t, ctx, "the login form", `!document.getElementById("login").hidden`)
	do(t, ctx, "log in",
		chromedp.SendKeys(chromedp.ID("login-token"), token),
		chromedp.Click(chromedp.CSS(`#login-form button[type=submit]`)))
	waitJS(t, ctx, "the live state", `document.getElementById("live").textContent === "live"`)
	do(t, ctx, "open the history", chromedp.Click(chromedp.CSS(`tr[data-tunnel-id="a.inet~b.inet"] td.state`)))
	waitJS(t, ctx, "the chart", `document.querySelector("#tunnel-detail svg.chart") !== null`)

	// The cookie goes; the stream, opened with it, goes on. A state change
	// makes the page fetch the history again: 401. The browser logs that
	// response itself (allowed here); the page must add nothing.
	do(t, ctx, "drop the session cookie", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, network.DeleteCookies, network.DeleteCookiesParams{Name: "meshwan_session", URL: base})
		return err
	}))
	b.allow("/api/history")
	src.setState(web.TunnelDown)
	waitJS(t, ctx, "the login form, saying why", `!document.getElementById("login").hidden && document.getElementById("app").hidden && document.getElementById("login-error").textContent.includes("session ended")`)
	if !eval[bool](t, ctx, `window.meshwan.stream === null && !window.meshwan.signedIn && window.meshwan.state === null`) {
		t.Error("the page still holds its stream or the state after the session ended")
	}
	b.checkNoErrors()
}
