package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// peerFlag, first on the command line, makes this program a peer process
// instead of the bench: `bench -peer mochi -listen ADDR -ws ADDR`. The
// bench starts itself so, so that mochi's memory is a process of its own.
const peerFlag = "-peer"

func runPeer(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != peerMochi {
		return fmt.Errorf("%s: want %s", peerFlag, peerMochi)
	}
	fs := flag.NewFlagSet("bench -peer mochi", flag.ContinueOnError)
	tcp := fs.String("listen", "127.0.0.1:1883", "MQTT listener")
	ws := fs.String("ws", "127.0.0.1:1882", "MQTT-over-WebSocket listener")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	// mochi as its README sets it up: default options and capabilities.
	s := mochi.New(&mochi.Options{
		InlineClient: false,
		Logger:       slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: *tcp})); err != nil {
		return err
	}
	if err := s.AddListener(listeners.NewWebsocket(listeners.Config{ID: "ws", Address: *ws})); err != nil {
		return err
	}
	if err := s.Serve(); err != nil {
		return err
	}
	<-ctx.Done()
	return s.Close()
}
