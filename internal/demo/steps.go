package demo

import (
	"context"

	"berth/internal/budget"
	"berth/internal/config"
	"berth/internal/haproxy"
	"berth/internal/lock"
)

// The demo's steps, for measuring other switch algorithms against it (internal/bench): no health check
// and no traffic move, only the steps, under the demo's lock and with its state kept.

// Begin takes the demo's lock for what, once it is built, and loads its state: Save the state and Release
// the lock when done.
func (d *Demo) Begin(ctx context.Context, what string) (*lock.Lock, *State, error) {
	return d.begin(ctx, budget.Job{What: what, LockWait: budget.Switch.LockWait}, true)
}

// Save records st.
func (d *Demo) Save(st *State) error { return d.save(st) }

// Other is the container that is not name.
func (d *Demo) Other(name string) string { return d.other(name) }

// StartContainer boots the container, which st then records as dirty.
func (d *Demo) StartContainer(ctx context.Context, st *State, name string) error {
	return d.start(ctx, st, name)
}

// StopContainer shuts the container down (bounded by StopTimeout), then kills it.
func (d *Demo) StopContainer(name string) error { return d.stop(name) }

// ResetContainer returns the stopped container to the current generation.
func (d *Demo) ResetContainer(ctx context.Context, st *State, name string) error {
	cur, err := d.current()
	if err != nil {
		return err
	}
	return d.reset(ctx, st, name, cur)
}

// PristineDir is the tree of the current pristine generation.
func (d *Demo) PristineDir() (string, error) {
	g, err := d.current()
	return d.genDir(g), err
}

// Config is the demo's configuration.
func (d *Demo) Config() config.Demo { return d.cfg }

// Servers are the containers behind the demo's proxy.
func (d *Demo) Servers() []haproxy.Server { return d.proxy.Servers }
