package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"pibridge"
	"pibridge/mqtt"
)

// embeddedAuth gathers the embedded broker's users (embedded_users_file,
// or a password generated once in state_dir and printed when made) and
// the bridge's own credentials there. clientPassword is what the bridge's
// client logs in with when mqtt.username is unset; with a username, the
// client reads password_file itself.
func embeddedAuth(cfg *Config, log *slog.Logger, stderr io.Writer) (a mqtt.BrokerAuth, clientPassword string, err error) {
	var users map[string]string
	if f := cfg.MQTT.EmbeddedUsersFile; f != "" {
		u, err := mqtt.LoadEmbeddedUsers(f)
		if err != nil {
			return mqtt.BrokerAuth{}, "", &configError{fmt.Errorf("mqtt.%w", err)}
		}
		users = u
		if fi, err := os.Stat(f); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("mqtt.embedded_users_file holds passwords and others may read it: chmod 600", "file", f, "mode", fi.Mode().Perm())
		}
	} else {
		pw, created, err := mqtt.LoadOrCreateEmbeddedPassword(cfg.StateDir)
		if err != nil {
			return mqtt.BrokerAuth{}, "", fmt.Errorf("mqtt.embedded_listen %s is beyond loopback and no embedded_users_file is set, so a password is generated: %w", cfg.MQTT.EmbeddedListen, err)
		}
		users = map[string]string{mqtt.EmbeddedUser: pw}
		path := filepath.Join(cfg.StateDir, mqtt.EmbeddedPasswordFile)
		if created {
			// The password goes to the terminal (or the journal) once,
			// never through the structured log that gets shipped.
			fmt.Fprintf(stderr, "mqtt: embedded broker user %q, password %s (kept in %s)\n", mqtt.EmbeddedUser, pw, path)
			log.Info("generated a password for the embedded broker", "user", mqtt.EmbeddedUser, "file", path)
		}
	}
	bridgePW := pibridge.RandomText()
	if cfg.MQTT.Username != "" {
		b, err := os.ReadFile(cfg.MQTT.PasswordFile)
		if err != nil {
			return mqtt.BrokerAuth{}, "", fmt.Errorf("mqtt.password_file: %w", err)
		}
		bridgePW = strings.TrimRight(string(b), "\r\n")
		if _, taken := users[cfg.MQTT.Username]; taken {
			return mqtt.BrokerAuth{}, "", &configError{fmt.Errorf("mqtt.embedded_users_file: user %q is mqtt.username, the bridge's own", cfg.MQTT.Username)}
		}
	} else {
		clientPassword = bridgePW
	}
	return cfg.MQTT.EmbeddedAuth(users, bridgePW), clientPassword, nil
}
