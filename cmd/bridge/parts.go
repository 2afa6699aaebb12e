package main

import (
	"context"
	"sync"

	"golang.org/x/sync/errgroup"
)

// part is one component of the bridge as the wiring sees it, its Run:
// it runs until ctx ends and returns only once every goroutine it started
// has ended.
type part func(context.Context) error

// runStages runs every part of every stage in one errgroup. When ctx ends
// or a part fails, the stages stop in the order given: the parts of a
// stage see their ctx end only once every part of the stage before has
// returned. That order is the shutdown order, written once by the caller.
// The first error of a part is returned.
func runStages(ctx context.Context, stages ...[]part) error {
	g, gctx := errgroup.WithContext(ctx)
	var before <-chan struct{} // closed when the previous stage has returned
	for _, stage := range stages {
		// Later stages outlive ctx: they stop when the earlier ones have.
		sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		prev := before
		g.Go(func() error {
			<-gctx.Done()
			if prev != nil {
				<-prev
			}
			stop()
			return nil
		})
		var wg sync.WaitGroup
		for _, p := range stage {
			wg.Add(1)
			g.Go(func() error {
				defer wg.Done()
				return p(sctx)
			})
		}
		done := make(chan struct{})
		g.Go(func() error {
			wg.Wait()
			if prev != nil {
				<-prev // an empty stage must not let the next one stop early
			}
			close(done)
			return nil
		})
		before = done
	}
	return g.Wait()
}
