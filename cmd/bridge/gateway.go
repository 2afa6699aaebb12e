package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"pibridge"
	"pibridge/gateway"
	"pibridge/web"
)

// A file with a gateway: section runs the binary as a gateway (README
// "Many boards"): no board, no pin, one panel for every device of a fleet.

// gatewayDerive is derive for a gateway. The MQTT client id stays empty unless set: the
// gateway makes a distinct one, so that two gateways of one fleet never
// take over each other's connection.
func (c *Config) gatewayDerive(getenv func(string) string) {
	if c.StateDir == "" {
		c.StateDir = defaultStateDir(getenv)
	}
	clientID := c.MQTT.ClientID
	c.MQTT.Derive("gateway")
	c.Gateway.MQTT = gateway.MQTTConfig{
		Brokers: c.MQTT.Broker, ClientID: clientID,
		Username: c.MQTT.Username, PasswordFile: c.MQTT.PasswordFile,
	}
	c.Gateway.Derive(c.MQTT.TopicPrefix)
	h := c.HTTP
	c.Gateway.HTTP = gateway.HTTPConfig{
		Listen: h.Listen, Token: h.Token, TokenFile: h.TokenFile, ReadToken: h.ReadToken,
		AllowedOrigins: h.AllowedOrigins, AllowedHosts: h.AllowedHosts, MaxClients: h.MaxClients,
		CertFile: h.TLS.CertFile, KeyFile: h.TLS.KeyFile,
	}
}

// validateGateway: a gateway owns no pin, so the board's keys are errors,
// each named; http: and mqtt: keep their own rules.
func (c *Config) validateGateway(p *pibridge.Problems) {
	g := c.GPIO
	for _, f := range []struct {
		set  bool
		path string
	}{
		{g.Board != "", "board"}, {len(g.Inputs) > 0, "inputs"}, {len(g.Outputs) > 0, "outputs"},
		{len(g.PWM) > 0, "pwm"}, {len(g.Sensors) > 0, "sensors"},
	} {
		if f.set {
			p.Addf(f.path, "a gateway owns no pin: remove %s, or the gateway: section to run a bridge", f.path)
		}
	}
	p.Add("http", c.HTTP.Validate())
	p.Add("mqtt", c.MQTT.Validate())
	if c.MQTT.UsesEmbedded() {
		p.Addf("mqtt.broker", "a gateway follows the fleet's broker: list its nodes, not embedded")
	}
	p.Add("", c.Gateway.Validate())
}

// serveGateway runs the gateway until ctx ends.
func serveGateway(ctx context.Context, cfg *Config, log *slog.Logger, stderr io.Writer) error {
	log.Info("starting as a gateway", "version", version, "state_dir", cfg.StateDir)
	if err := os.MkdirAll(cfg.StateDir, 0o750); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	}
	gw, err := gateway.New(*cfg.Gateway, gateway.Deps{
		Logger: log.With("part", "gateway"), Version: version, Panel: web.Handler(), StateDir: cfg.StateDir,
	})
	if err != nil {
		return err
	}
	log.Info("fleet page listening", "addr", gw.Addr().String())
	fmt.Fprintf(stderr, "fleet: %s\n", gw.PanelURL())
	err = gw.Run(ctx)
	log.Info("stopped")
	return err
}

func printGateway(w io.Writer, c *Config) {
	fmt.Fprintf(w, "gateway  %q\nstate    %s\nhttp     %s\nmqtt     %s  prefix %s/+\n",
		c.Gateway.Name, c.StateDir, c.HTTP.Listen, c.MQTT.BrokerSummary(), c.Gateway.TopicPrefix)
}
