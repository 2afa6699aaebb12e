package httpx

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"pibridge"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		err    error
		want   int
		wantOK bool
	}{
		{fmt.Errorf("x: %w", pibridge.ErrUnknownSignal), http.StatusNotFound, true},
		{fmt.Errorf("x: %w", pibridge.ErrNotWritable), http.StatusConflict, true},
		{pibridge.ErrConflict, http.StatusConflict, true},
		{fmt.Errorf("x: %w", pibridge.ErrBadValue), http.StatusBadRequest, true},
		{fmt.Errorf("x: %w", pibridge.ErrReadOnly), http.StatusForbidden, true},
		{context.DeadlineExceeded, http.StatusGatewayTimeout, true},
		{pibridge.ErrNotReady, http.StatusServiceUnavailable, true},
		{pibridge.ErrBusy, http.StatusServiceUnavailable, true},
		{errors.New("something else"), 0, false},
	}
	for _, tt := range tests {
		got, ok := Status(tt.err)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("Status(%v) = %d, %v; want %d, %v", tt.err, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestWriteError(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteError(rec, http.StatusConflict, `relay: "busy"`)
	if rec.Code != http.StatusConflict {
		t.Errorf("status %d, want 409", rec.Code)
	}
	if got, want := rec.Body.String(), `{"error":"relay: \"busy\""}`+"\n"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
	for k, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if got := rec.Header().Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}
