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

func TestNewSessionCookie(t *testing.T) {
	plain := httptest.NewRequest("POST", "http://bridge/api/login", nil)
	tlsReq := httptest.NewRequest("POST", "https://bridge/api/login", nil)
	tests := []struct {
		name string
		c    *http.Cookie
		want string
	}{
		{"plain", NewSessionCookie(plain, "v1", 60), "pibridge_session=v1; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"},
		{"tls", NewSessionCookie(tlsReq, "v1", 60), "pibridge_session=v1; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Strict"},
		{"delete", NewSessionCookie(plain, "", -1), "pibridge_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
