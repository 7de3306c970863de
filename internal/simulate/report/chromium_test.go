package report

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/epfl-cvlab/cvlab-queue/internal/simulate"
)

// screenshotEnv names a PNG file to write the rendered report to (docs/simulate-report.png is
// made so); the test writes none without it.
const screenshotEnv = "SIMULATE_REPORT_SCREENSHOT"

// reportEnv names a JSON file of results (kubectl cvlab simulate --output json) to render instead
// of the fixture, for the screenshot of a realistic run.
const reportEnv = "SIMULATE_REPORT_RESULTS"

// TestReportInChromium opens the report from a file in headless Chromium with the network cut
// off: it renders every chart, and the page makes no request but for its own file.
func TestReportInChromium(t *testing.T) {
	chromium := "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		if chromium, err = exec.LookPath("chromium"); err != nil {
			t.Skip("no Chromium at /usr/bin/chromium nor on PATH: apt-get install -y chromium")
		}
	}
	results := []*simulate.Result{fixture("FirstGPU", 1), fixture("Rank", 0.6), fixture("Never", 1.8)}
	if path := os.Getenv(reportEnv); path != "" {
		results = readResults(t, path)
	}
	file := filepath.Join(t.TempDir(), "report.html")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(f, results); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		// No name resolves and no proxy answers: a request could not leave the machine.
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND"),
		chromedp.ProxyServer("127.0.0.1:9"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	defer cancelTab()

	var mu sync.Mutex
	var requests []string
	if err := chromedp.Listen(tab, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			requests = append(requests, e.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	page := (&url.URL{Scheme: "file", Path: file}).String()
	if _, err := chromedp.Call(tab, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.Navigate(page), chromedp.WaitReady(chromedp.CSS("footer"))); err != nil {
		t.Fatalf("opening the report: %v", err)
	}

	// Every chart is drawn: a visible SVG with its shapes.
	charts, err := chromedp.Run(tab, chromedp.Evaluate[[]map[string]any](`Array.from(document.querySelectorAll('figure.chart')).map(f => {
		const svg = f.querySelector('svg'), box = svg.getBoundingClientRect();
		return {title: f.querySelector('figcaption strong').textContent, width: Math.round(box.width) > 300, height: Math.round(box.height) > 80,
			shapes: svg.querySelectorAll('polygon, polyline, rect').length > 0};
	})`))
	if err != nil {
		t.Fatal(err)
	}
	var titles []string
	for _, c := range charts {
		titles = append(titles, c["title"].(string))
		if c["width"] != true || c["height"] != true || c["shapes"] != true {
			t.Errorf("chart %v is not drawn: %v", c["title"], c)
		}
	}
	want := []string{}
	for range results {
		want = append(want, "GPUs per user", "Busy, idle and capacity")
	}
	want = append(want, "Jobs waiting", "Wait by GPU ordinal", "1st-GPU jobs: time to start")
	if diff := cmp.Diff(want, titles); diff != "" {
		t.Errorf("charts (-want +got):\n%s", diff)
	}
	// The summary's figures are in the page, one column per result.
	heads, err := chromedp.Run(tab, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#summary th.result')).map(th => th.textContent.trim())`))
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, r := range results {
		labels = append(labels, labelOf(r))
	}
	if diff := cmp.Diff(labels, heads); diff != "" {
		t.Errorf("summary columns (-want +got):\n%s", diff)
	}
	if os.Getenv(reportEnv) == "" {
		wait, err := chromedp.Run(tab, chromedp.Evaluate[string](`Array.from(document.querySelectorAll('#summary tr')).find(tr => tr.querySelector('th').textContent.startsWith('Wait p50, all jobs')).querySelector('td').textContent`))
		if err != nil {
			t.Fatal(err)
		}
		if wait != "25m" {
			t.Errorf("p50 wait of the first result shown as %q, want 25m", wait)
		}
	}
	// No request but for the page itself, and no resource loaded.
	resources, err := chromedp.Run(tab, chromedp.Evaluate[int](`performance.getEntriesByType('resource').length`))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := append([]string(nil), requests...)
	mu.Unlock()
	if diff := cmp.Diff([]string{page}, got); diff != "" || resources != 0 {
		t.Errorf("requests (-want +got):\n%s\nresources loaded: %d", diff, resources)
	}

	if out := os.Getenv(screenshotEnv); out != "" {
		// The top of the page: the summary, the charts over time and the first waits.
		if err := chromedp.Do(tab, chromedp.EmulateViewport(1280, 2600)); err != nil {
			t.Fatal(err)
		}
		png, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot written to %s", out)
	}
}

// readResults reads results as JSON: an array of results, or one.
func readResults(t *testing.T, path string) []*simulate.Result {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var results []*simulate.Result
	if err := json.Unmarshal(data, &results); err != nil {
		var one simulate.Result
		if err := json.Unmarshal(data, &one); err != nil {
			t.Fatalf("%s: neither results nor a result: %v", path, err)
		}
		results = []*simulate.Result{&one}
	}
	return results
}
