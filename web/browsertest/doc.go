// Package browsertest holds the dashboard's end-to-end tests: a real
// controller (daemon.Start on loopback) with a seeded network and enrolled
// edges that report tunnel status over their Sync streams, and the page
// driven in headless Chromium through chromedp. The tests skip when
// /usr/bin/chromium is absent.
//
// Screenshots go to $MESHWAN_ARTIFACTS (default: a test temp dir). To
// refresh the README's screenshot, docs/images/dashboard.png:
//
//	go test ./web/browsertest -run TestREADMEScreenshot -update-screenshot
//
// It lives apart from package web so that web itself never imports the
// controller.
package browsertest
