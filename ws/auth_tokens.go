package ws

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"pibridge"
)

// loadTokens resolves the control token: token, token_file, or — when the
// listen address is beyond loopback and neither is set — the token kept
// in StateDir/token, generated on first start.
func (g *gatekeeper) loadTokens(cfg Config, stateDir string) error {
	token := cfg.Token
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("ws: http.token_file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		switch {
		case token == "":
			return fmt.Errorf("ws: http.token_file: %s is empty", cfg.TokenFile)
		case validToken(token) != nil:
			return fmt.Errorf("ws: http.token_file: %s: %w", cfg.TokenFile, validToken(token))
		case token == cfg.ReadToken:
			return errors.New("ws: http.read_token must differ from the token in token_file")
		}
	}
	if cfg.generatesToken() {
		t, created, err := loadOrCreateToken(stateDir)
		if err != nil {
			return fmt.Errorf("ws: http.listen %s is beyond loopback and no token is set, so one is generated: %w", cfg.Listen, err)
		}
		if t == cfg.ReadToken {
			return errors.New("ws: http.read_token must differ from the generated token")
		}
		token, g.generated = t, t
		if created {
			g.log.Info("generated an http token: open the panel URL printed at start", "file", filepath.Join(stateDir, tokenFileName))
		}
	}
	if token == "" || token == TokenNone {
		return nil
	}
	g.on = true
	g.tokenSum = sha256.Sum256([]byte(token))
	if cfg.ReadToken != "" {
		g.hasReadToken = true
		g.readSum = sha256.Sum256([]byte(cfg.ReadToken))
	}
	if len(token) < 16 {
		g.log.Warn("the http token is short; use at least 16 random characters")
	}
	return nil
}

// loadOrCreateToken returns the token in dir/token, creating it (0600,
// 256 random bits) when the file does not exist.
func loadOrCreateToken(dir string) (token string, created bool, err error) {
	if dir == "" {
		return "", false, errors.New("no state_dir to keep it in: set http.token, http.token_file or token: none")
	}
	path := filepath.Join(dir, tokenFileName)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		token = strings.TrimSpace(string(b))
		if token == "" || validToken(token) != nil {
			return "", false, fmt.Errorf("%s holds no usable token: delete it to have a new one generated", path)
		}
		return token, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, err
	}
	token = pibridge.RandomText()
	if err := pibridge.WriteSecretFile(dir, tokenFileName, token); err != nil {
		return "", false, err
	}
	return token, true, nil
}
