package ingestbench

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The ceiling reads the whole body and answers what ingest answers an accepted webhook with.
func TestCeilingAnswersLikeIngest(t *testing.T) {
	url, stop, err := startCeiling()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Post(url, "application/json", strings.NewReader(string(event("evt_1"))))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || string(body) != ceilingBody || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q (%s)", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
}
